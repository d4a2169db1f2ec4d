"""What the client receives: chunks encoded for its endpoint, or one object combined from them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from .chunks import COMPLETION_OBJECTS, TEXT_COMPLETION_OBJECT, Batch, Choice, Chunk
from .context import RequestContext
from .sse import encode_event

_ENVELOPE = frozenset({"id", "object", "created", "model", "choices", "usage"})


def text_completion_chunk(chunk: Chunk) -> dict[str, Any]:
    """A chat chunk as the legacy /completions endpoint streams it."""
    return {
        "id": chunk["id"],
        "object": TEXT_COMPLETION_OBJECT,
        "created": chunk["created"],
        "model": chunk["model"],
        "choices": [
            {
                "text": choice["delta"].get("content") or "",
                "index": choice["index"],
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in chunk["choices"]
        ],
        **({"usage": chunk["usage"]} if "usage" in chunk else {}),
    }


def encoder(ctx: RequestContext) -> Callable[[Chunk], bytes]:
    """The per-chunk encoder for the client's endpoint (the hot path: no per-chunk branching on it)."""
    if ctx.endpoint == "chat":
        return lambda chunk: encode_event(orjson.dumps(chunk))
    return lambda chunk: encode_event(orjson.dumps(text_completion_chunk(chunk)))


class _ChoiceParts:
    __slots__ = ("content", "reasoning", "refusal", "tool_calls", "logprobs", "finish_reason", "thinking_blocks",
                 "block_start")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.thinking_blocks: list[dict[str, Any]] = []  # signed and redacted reasoning, to be sent back as is
        self.block_start = 0  # where the current thinking block's text begins in `reasoning`
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: Choice) -> None:
        delta = choice.get("delta") or {}
        if isinstance(content := delta.get("content"), str):
            self.content.append(content)
        if isinstance(delta.get("reasoning_content"), str):
            self.reasoning.append(delta["reasoning_content"])
        if delta.get("reasoning_signature"):
            self.thinking_blocks.append({"type": "thinking", "thinking": "".join(self.reasoning[self.block_start:]),
                                         "signature": delta["reasoning_signature"]})
            self.block_start = len(self.reasoning)
        if delta.get("redacted_thinking"):
            self.thinking_blocks.append({"type": "redacted_thinking", "data": delta["redacted_thinking"]})
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            slot = self.tool_calls.setdefault(
                call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            if call.get("extra_content"):  # Gemini's thought signature: the client must send it back
                slot["extra_content"] = call["extra_content"]
            function = call.get("function") or {}
            if function.get("name"):
                slot["function"]["name"] += function["name"]
            if function.get("arguments"):
                slot["function"]["arguments"] += function["arguments"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = self.logprobs = self.logprobs or {}
            for key, value in logprobs.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
                elif key not in merged:
                    merged[key] = value
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]

    def chat_choice(self, index: int) -> dict[str, Any]:
        text = "".join(self.content)
        message: dict[str, Any] = {"role": "assistant", "content": text or (None if self.tool_calls or not self.content else ""),
                         "refusal": "".join(self.refusal) if self.refusal else None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.thinking_blocks:
            message["thinking_blocks"] = self.thinking_blocks
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {"index": index, "message": message, "logprobs": self.logprobs, "finish_reason": self.finish_reason}

    def text_choice(self, index: int) -> dict[str, Any]:
        return {"text": "".join(self.content), "index": index, "logprobs": self.logprobs,
                "finish_reason": self.finish_reason}


async def combine(ctx: RequestContext, batches: AsyncIterator[Batch]) -> dict[str, Any]:
    """The non-streaming answer: the same chunks, joined per choice."""
    parts: dict[int, _ChoiceParts] = {}
    head: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    usage = None
    async for batch in batches:
        for chunk in batch:
            if not head:
                head = {k: chunk.get(k) for k in ("id", "created", "model")}
            for key, value in chunk.items():
                if key not in _ENVELOPE:
                    extras[key] = value
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                parts.setdefault(choice.get("index", 0), _ChoiceParts()).add(choice)
    chat = ctx.endpoint == "chat"
    choices = [
        parts[i].chat_choice(i) if chat else parts[i].text_choice(i) for i in sorted(parts)
    ]
    return {
        "id": head.get("id"),
        "object": COMPLETION_OBJECTS[ctx.endpoint],
        "created": head.get("created", ctx.created),
        "model": head.get("model", ctx.model),
        "choices": choices,
        "usage": usage,
        **extras,
    }
