"""OpenAI's response_format and reasoning_effort as Anthropic's Messages API takes them.

- `json_schema` goes as Anthropic's native structured output (`output_config.format`) on the models that
  have it (Claude 4.5 and later: any model `LEGACY_MODELS` does not name); on older models, and for
  `json_object` or a `json_schema` without its (optional) schema, as one forced tool whose input schema is the
  response's. The stream parser turns that tool's input back into the message's `content`, so the client
  never sees a tool call it did not ask for (`answer_tool`).
- A forced tool cannot sit beside the client's own tools, nor beside thinking (Anthropic refuses a forced
  tool_choice with thinking on): those requests are a 400 naming `response_format`, never a silent drop.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import invalid_param
from ..validation.reasoning import output_limit, thinking_budget

# Claude models from before native structured outputs (Claude 2 and 3.x, Opus/Sonnet 4 and Opus 4.1, in
# Anthropic's, Bedrock's and Vertex's spellings): every other model name, a newer model's or an alias the
# operator made up, is sent the native request.
LEGACY_MODELS = re.compile(r"claude-(?:instant|[23](?![0-9])|(?:opus|sonnet|haiku)-4(?:-[01])?(?:-[0-9]{8}|[@:]|-v|$))")
ANSWER_TOOL = "json_response"  # the forced tool's name when the schema has none
ANSWER_TOOL_DESCRIPTION = "Give the answer: its input is the whole response, as a JSON object."
ANY_OBJECT = {"type": "object"}
EFFORTS = ("none", "minimal", "low", "medium", "high")


def structured_kind(body: dict[str, Any]) -> str | None:
    """'json_schema' or 'json_object' when the (validated) body asks for structured output, else None."""
    response_format = body.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    return kind if kind in ("json_schema", "json_object") else None


def _json_schema(body: dict[str, Any]) -> dict[str, Any]:
    return body["response_format"].get("json_schema") or {}


def _schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The response's JSON Schema: None for json_object, and for a json_schema that gives none (OpenAI's
    schema is optional: then any JSON object, as json_object)."""
    if structured_kind(body) != "json_schema":
        return None
    schema = _json_schema(body).get("schema")
    return schema if isinstance(schema, dict) else None


def answer_tool(body: dict[str, Any], model: str) -> str | None:
    """The name of the forced tool that carries the answer, when this request is sent with one."""
    kind = structured_kind(body)
    if kind is None or (_schema(body) is not None and not LEGACY_MODELS.search(model)):
        return None
    name = _json_schema(body).get("name") if kind == "json_schema" else None
    return name or ANSWER_TOOL


def thinking(body: dict[str, Any]) -> dict[str, Any] | None:
    """The client's own `thinking` wins; else reasoning_effort's budget ('none': no thinking)."""
    client_thinking = body.get("thinking")
    if isinstance(client_thinking, dict):  # validated: an object when given
        return client_thinking
    effort = body.get("reasoning_effort")
    if effort is None or effort == "none":
        return None
    return {"type": "enabled", "budget_tokens": thinking_budget(effort, EFFORTS)}


def thinking_on(value: dict[str, Any] | None) -> bool:
    return isinstance(value, dict) and value.get("type") in ("enabled", "adaptive")


def max_tokens(client_limit: int | None, value: dict[str, Any] | None, default: int) -> int:
    """The budget must be smaller than max_tokens: output_limit raises the limit by it when it is not."""
    budget = value.get("budget_tokens") if isinstance(value, dict) and value.get("type") == "enabled" else None
    if not isinstance(budget, int):
        return client_limit if client_limit is not None else default
    limit = output_limit(client_limit, budget, default)
    assert limit is not None
    return limit


def apply_response_format(out: dict[str, Any], body: dict[str, Any], model: str) -> None:
    """Adds the structured-output request to the Messages body `out` (its tools and thinking already set)."""
    kind = structured_kind(body)
    if kind is None:
        return
    schema = _schema(body)
    tool = answer_tool(body, model)
    if tool is None:
        out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return
    why = "Anthropic's structured output for this model is a forced tool, which"
    if out.get("tools"):
        raise invalid_param("response_format", f"{why} cannot be combined with 'tools': use a model with native "
                            "structured outputs (Claude 4.5 or later) and 'json_schema'")
    if thinking_on(out.get("thinking")):
        raise invalid_param("response_format", f"{why} Anthropic refuses with thinking on: drop reasoning_effort "
                            "or use a model with native structured outputs (Claude 4.5 or later) and 'json_schema'")
    description = _json_schema(body).get("description") if kind == "json_schema" else None
    out["tools"] = [{"name": tool, "description": description or ANSWER_TOOL_DESCRIPTION,
                     "input_schema": schema or ANY_OBJECT}]
    out["tool_choice"] = {"type": "tool", "name": tool}
