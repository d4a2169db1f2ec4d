"""Checks client bodies for /chat/completions and /completions; each problem names its `param`."""

from __future__ import annotations

from typing import Any

from .errors import invalid_param

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# param: (low, high) inclusive bounds for numbers both endpoints share
_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
_POSITIVE_INTS = ("max_tokens", "max_completion_tokens")
MAX_N = 128


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _common(body: Any) -> dict:
    if not isinstance(body, dict):
        raise invalid_param(None, "the request body must be a JSON object", "invalid_type")
    model = body.get("model")
    if model is None:
        raise invalid_param("model", "you must provide a model parameter", "missing_required_parameter")
    if not isinstance(model, str) or not model.strip():
        raise invalid_param("model", "'model' must be a non-empty string", "invalid_type")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid_param("stream", "'stream' must be a boolean", "invalid_type")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid_param("stream_options", "'stream_options' must be an object", "invalid_type")
        if not isinstance(options.get("include_usage", False), bool):
            raise invalid_param("stream_options.include_usage", "'include_usage' must be a boolean", "invalid_type")
        if not stream:
            raise invalid_param("stream_options", "'stream_options' is only allowed when 'stream' is true")
    for param, (low, high) in _RANGES.items():
        value = body.get(param)
        if value is None:
            continue
        if not _is_number(value):
            raise invalid_param(param, f"'{param}' must be a number", "invalid_type")
        if not low <= value <= high:
            raise invalid_param(param, f"'{param}' must be between {low:g} and {high:g}, got {value}")
    for param in _POSITIVE_INTS:
        value = body.get(param)
        if value is None:
            continue
        if not _is_int(value):
            raise invalid_param(param, f"'{param}' must be an integer", "invalid_type")
        if value < 1:
            raise invalid_param(param, f"'{param}' must be at least 1, got {value}")
    n = body.get("n")
    if n is not None:
        if not _is_int(n):
            raise invalid_param("n", "'n' must be an integer", "invalid_type")
        if not 1 <= n <= MAX_N:
            raise invalid_param("n", f"'n' must be between 1 and {MAX_N}, got {n}")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, list):
            if len(stop) > 4 or not all(isinstance(s, str) for s in stop):
                raise invalid_param("stop", "'stop' must be a string or a list of at most 4 strings")
        elif not isinstance(stop, str):
            raise invalid_param("stop", "'stop' must be a string or a list of at most 4 strings", "invalid_type")
    return body


def validate_chat(body: Any) -> dict:
    body = _common(body)
    messages = body.get("messages")
    if messages is None:
        raise invalid_param("messages", "you must provide a messages parameter", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise invalid_param("messages", "'messages' must be a non-empty array", "invalid_type")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid_param(where, f"'{where}' must be an object", "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise invalid_param(f"{where}.role", f"'{where}.role' must be one of {', '.join(sorted(ROLES))}")
        content = message.get("content")
        if content is None:
            if role not in ("assistant", "function") and not message.get("tool_calls"):
                raise invalid_param(f"{where}.content", f"'{where}.content' is required for role '{role}'")
        elif isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise invalid_param(f"{where}.content[{j}]", "each content part must be an object with a 'type'",
                                        "invalid_type")
        elif not isinstance(content, str):
            raise invalid_param(f"{where}.content", f"'{where}.content' must be a string or an array of parts",
                                "invalid_type")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise invalid_param(f"{where}.tool_call_id", "a tool message needs a string 'tool_call_id'")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_param("tools", "'tools' must be an array", "invalid_type")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
                raise invalid_param(f"tools[{i}].function", "each tool needs a 'function' with a 'name'")
    return body


def validate_completion(body: Any) -> dict:
    body = _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise invalid_param("prompt", "you must provide a prompt parameter", "missing_required_parameter")
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise invalid_param("prompt", "'prompt' must be a string or a non-empty array of strings", "invalid_type")
    elif not isinstance(prompt, str):
        raise invalid_param("prompt", "'prompt' must be a string or an array of strings", "invalid_type")
    return body
