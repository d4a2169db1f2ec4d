"""What every client body is checked for, on both endpoints: its nesting, the model name, and the fields
that steer sampling and the output's shape. Each problem is a 400 naming its `param`."""

from __future__ import annotations

import re
from typing import Any

from ..config import MAX_COALESCE_MS
from ..errors import GatewayError, invalid_param
from .reasoning import check_reasoning_fields

# Deeper bodies are refused before anything reads them: every converter may walk them, and orjson
# cannot write JSON nested past 255 levels. A chat body with a tool schema 29 levels deep still fits.
MAX_NESTING = 64
# Model names go into routing, URLs and log lines: a sane length, and no control characters.
MAX_MODEL_LENGTH = 256
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1 (ESC, NEL...), line breaks

# param: (low, high) inclusive bounds for numbers both endpoints share
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_POSITIVE_INTS = ("max_tokens", "max_completion_tokens")
MAX_N = 128
MAX_STOP = 4
LOGIT_BIAS_RANGE = 100
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for json_schema.name


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wrong_type(param: str, expected: str) -> GatewayError:
    return invalid_param(param, f"'{param}' must be {expected}", "invalid_type")


def not_an_int(param: str, value: Any) -> GatewayError:
    """An integer param's error. orjson reads an integer beyond 64 bits as a float: say so, rather than
    that a whole number written in digits is not an integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2 ** 63:
        return invalid_param(param, f"'{param}' must be an integer between -2^63 and 2^63 - 1, got {value:g}")
    return wrong_type(param, "an integer")


def optional_string(holder: dict[str, Any], key: str, param: str) -> None:
    value = holder.get(key)
    if value is not None and not isinstance(value, str):
        raise wrong_type(param, "a string")


def optional_bool(holder: dict[str, Any], key: str, param: str) -> None:
    value = holder.get(key)
    if value is not None and not isinstance(value, bool):
        raise wrong_type(param, "a boolean")


def optional_object(holder: dict[str, Any], key: str, param: str) -> dict[str, Any] | None:
    value = holder.get(key)
    if value is not None and not isinstance(value, dict):
        raise wrong_type(param, "an object")
    return value


def nested_deeper_than(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether JSON `value` nests more than `limit` levels (the value itself is level 1). An explicit stack,
    not recursion: each container is looked at once, in less time than orjson took to build it."""
    if value.__class__ is not dict and value.__class__ is not list:
        return False
    containers = [value]
    depths = [1]
    pop, pop_depth, push, push_depth = containers.pop, depths.pop, containers.append, depths.append
    while containers:
        container = pop()
        depth = pop_depth() + 1  # the depth of its children
        for child in container.values() if container.__class__ is dict else container:
            if child.__class__ is dict or child.__class__ is list:
                if depth > limit:
                    return True
                push(child)
                push_depth(depth)
    return False


def too_deep(param: str | None, what: str) -> GatewayError:
    return invalid_param(param, f"{what} is nested deeper than {MAX_NESTING} levels", "nesting_too_deep")


def check_model(model: Any) -> None:
    if model is None:
        raise invalid_param("model", "you must provide a model parameter", "missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise invalid_param("model", "'model' must be a non-empty string", "invalid_type")
    if len(model) > MAX_MODEL_LENGTH:
        raise invalid_param("model", f"'model' must be at most {MAX_MODEL_LENGTH} characters, got {len(model)}")
    if _CONTROL_CHARACTERS.search(model):
        raise invalid_param("model", "'model' must not contain control characters")


def check_common(body: Any) -> dict[str, Any]:
    if nested_deeper_than(body):
        raise too_deep(None, "the request body")
    if not isinstance(body, dict):
        raise invalid_param(None, "the request body must be a JSON object", "invalid_type")
    check_model(body.get("model"))
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise wrong_type("stream", "a boolean")
    options = optional_object(body, "stream_options", "stream_options")
    if options is not None:
        optional_bool(options, "include_usage", "stream_options.include_usage")
        optional_bool(options, "include_obfuscation", "stream_options.include_obfuscation")
        optional_bool(options, "resumable", "stream_options.resumable")
        coalesce = options.get("coalesce_ms")
        if coalesce is not None and (not is_int(coalesce) or not 0 <= coalesce <= MAX_COALESCE_MS):
            raise invalid_param("stream_options.coalesce_ms",
                                f"'stream_options.coalesce_ms' must be an integer from 0 to {MAX_COALESCE_MS}")
        if not stream:
            raise invalid_param("stream_options", "'stream_options' is only allowed when 'stream' is true")
    _check_numbers(body)
    _check_stop(body.get("stop"))
    seed = body.get("seed")
    if seed is not None and not is_int(seed):
        raise not_an_int("seed", seed)
    optional_string(body, "user", "user")
    optional_string(body, "reasoning_effort", "reasoning_effort")
    _check_logit_bias(body.get("logit_bias"))
    _check_response_format(body)
    _check_thinking(body)
    check_reasoning_fields(body)
    return body


def _check_numbers(body: dict[str, Any]) -> None:
    for param, (low, high) in _RANGES.items():
        value = body.get(param)
        if value is None:
            continue
        if not is_number(value):
            raise wrong_type(param, "a number")
        if not low <= value <= high:
            raise invalid_param(param, f"'{param}' must be between {low:g} and {high:g}, got {value}")
    for param in _POSITIVE_INTS:
        value = body.get(param)
        if value is None:
            continue
        if not is_int(value):
            raise not_an_int(param, value)
        if value < 1:
            raise invalid_param(param, f"'{param}' must be at least 1, got {value}")
    n = body.get("n")
    if n is not None:
        if not is_int(n):
            raise not_an_int("n", n)
        if not 1 <= n <= MAX_N:
            raise invalid_param("n", f"'n' must be between 1 and {MAX_N}, got {n}")


def _check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list):
        raise wrong_type("stop", f"a string or a list of at most {MAX_STOP} strings")
    if len(stop) > MAX_STOP or not all(isinstance(s, str) for s in stop):
        raise invalid_param("stop", f"'stop' must be a string or a list of at most {MAX_STOP} strings")


def _check_logit_bias(bias: Any) -> None:
    if bias is None:
        return
    if not isinstance(bias, dict):
        raise wrong_type("logit_bias", "an object of token ids to numbers")
    for value in bias.values():
        if not is_number(value):
            raise wrong_type("logit_bias", "an object of token ids to numbers")
        if not -LOGIT_BIAS_RANGE <= value <= LOGIT_BIAS_RANGE:
            raise invalid_param("logit_bias", f"each 'logit_bias' value must be between -{LOGIT_BIAS_RANGE} and "
                                f"{LOGIT_BIAS_RANGE}, got {value}")


def _check_response_format(body: dict[str, Any]) -> None:
    response_format = optional_object(body, "response_format", "response_format")
    if response_format is None:
        return
    kind = response_format.get("type")
    if kind not in RESPONSE_FORMATS:
        code = "invalid_value" if isinstance(kind, str) else "invalid_type"
        raise invalid_param("response_format.type",
                            f"'response_format.type' must be one of {', '.join(RESPONSE_FORMATS)}", code)
    json_schema = optional_object(response_format, "json_schema", "response_format.json_schema")
    if json_schema is not None:
        optional_string(json_schema, "name", "response_format.json_schema.name")
        name = json_schema.get("name")
        if name is not None and not _SCHEMA_NAME.match(name):  # Anthropic's answer tool is named after it
            raise invalid_param("response_format.json_schema.name", "'response_format.json_schema.name' must be 1 to "
                                "64 letters, digits, underscores or dashes")
        optional_string(json_schema, "description", "response_format.json_schema.description")
        optional_object(json_schema, "schema", "response_format.json_schema.schema")
        optional_bool(json_schema, "strict", "response_format.json_schema.strict")


def _check_thinking(body: dict[str, Any]) -> None:
    """Anthropic's `thinking` extension, passed to Anthropic as it is."""
    thinking = optional_object(body, "thinking", "thinking")
    if thinking is None:
        return
    if not isinstance(thinking.get("type"), str):
        raise wrong_type("thinking.type", "a string")
    budget = thinking.get("budget_tokens")
    if budget is not None and (not is_int(budget) or budget < 1):
        raise wrong_type("thinking.budget_tokens", "a positive integer")
