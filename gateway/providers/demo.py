"""The offline demo model: no key, no network, a deterministic answer streamed at a realistic pace.

It answers text, honours `n` and `max_tokens`, and calls the first (or the chosen) tool when tools are
given, with arguments made from the tool's JSON schema; after a tool result it answers with that result.
It is a local adapter (providers/base.py): no base_url, no key, its one option `token_interval`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson

from ..chunks import Chunk, Delta, Envelope, response_id_of
from ..validation import max_output_tokens, prompt_text
from .base import LocalAdapter, Option

if TYPE_CHECKING:
    from ..context import RequestContext

_PIECES = re.compile(r"\s*\S+")
MAX_PIECES = 4096  # the demo model's longest answer, as a real model has one: past it, finish_reason "length"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _prompt_text(ctx: RequestContext) -> str:
    if ctx.endpoint == "completions":
        return prompt_text(ctx.body)
    return "\n".join(_text_of(m.get("content")) for m in ctx.body["messages"])


def _sample(schema: Any, text: str) -> Any:
    """A value for `schema`. Schemas are client data: a keyword of the wrong type is ignored."""
    if not isinstance(schema, dict):
        return text
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return _arguments(schema, text)
    return text


def _arguments(schema: dict[str, Any], text: str) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    required = schema.get("required")
    names = required if isinstance(required, list) and required else list(properties)
    # each name once: a name repeated in `required` must not sample its schema again (at every level)
    return {name: _sample(properties.get(name), text) for name in dict.fromkeys(n for n in names
                                                                                 if isinstance(n, str))}


def _chosen_tool(ctx: RequestContext) -> dict[str, Any] | None:
    tools = ctx.body.get("tools") if ctx.endpoint == "chat" else None
    choice = ctx.body.get("tool_choice", "auto")
    messages = ctx.body.get("messages") or []
    if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        chosen: dict[str, Any] = next((t["function"] for t in tools if t["function"]["name"] == wanted),
                                      tools[0]["function"])
        return chosen
    first_tool: dict[str, Any] = tools[0]["function"]
    return first_tool


def _reply(ctx: RequestContext) -> str:
    messages = ctx.body.get("messages") or []
    if messages and messages[-1].get("role") == "tool":
        result = _text_of(messages[-1].get("content"))[:300]
        return f"The tool answered: {result}"
    last = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), None)
    if ctx.endpoint == "completions":
        last = _prompt_text(ctx)
    quoted = " ".join((last or "").split())[:200]
    return (
        "Hello from the gateway's demo model: it answers offline, with no API key. "
        f'You wrote: "{quoted}". '
        "Set a provider key such as OPENAI_API_KEY and ask for openai/gpt-4o-mini to reach a real model."
    )


async def stream(ctx: RequestContext) -> AsyncGenerator[Chunk, None]:
    envelope = Envelope(ctx.endpoint, ctx.created, ctx.model, response_id_of(ctx.endpoint, f"demo-{ctx.request_id}"))
    interval = ctx.provider.token_interval
    limit = max_output_tokens(ctx.body)
    tool = _chosen_tool(ctx)
    if tool is not None:
        arguments = orjson.dumps(_arguments(tool.get("parameters") or {}, _reply_subject(ctx))).decode()
        pieces = [arguments[i:i + 8] for i in range(0, len(arguments), 8)]
        finish = "tool_calls"
    else:
        pieces = _PIECES.findall(_reply(ctx))
        finish = "stop"
    limit = MAX_PIECES if limit is None else min(limit, MAX_PIECES)
    if len(pieces) > limit:
        pieces, finish = pieces[:limit], "length"
    prompt_tokens = len(_PIECES.findall(_prompt_text(ctx)))  # now: the body is let go after the first content

    for index in range(ctx.choices):
        first: Delta = {"role": "assistant", "content": None if tool else ""}
        if tool is not None:
            first["tool_calls"] = [{"index": 0, "id": f"call_demo{index}", "type": "function",
                                    "function": {"name": tool["name"], "arguments": ""}}]
        yield envelope.delta(index, first)
    for piece in pieces:
        await asyncio.sleep(interval)
        for index in range(ctx.choices):
            delta: Delta
            if tool is not None:
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            else:
                delta = {"content": piece}
            yield envelope.delta(index, delta)
    for index in range(ctx.choices):
        yield envelope.finish(index, finish)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces) * ctx.choices,
             "total_tokens": prompt_tokens + len(pieces) * ctx.choices}
    yield envelope.usage(usage)


def _reply_subject(ctx: RequestContext) -> str:
    messages = ctx.body.get("messages") or []
    last = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    return " ".join(last.split())[:40]


class DemoAdapter(LocalAdapter):
    kind = "demo"
    # token_interval: seconds between streamed tokens (ProviderConfig's default: 0.03)
    options = (Option("token_interval", float, minimum=0), Option("standby", bool))
    stream = staticmethod(stream)


ADAPTER = DemoAdapter()
