"""Anthropic Messages SSE, built event by event, for tests that script a fake Claude."""

from __future__ import annotations

import orjson


def event(name: str, payload: dict) -> bytes:
    return f"event: {name}\n".encode() + b"data: " + orjson.dumps({"type": name, **payload}) + b"\n\n"


def message(*blocks: bytes, stop_reason: str = "end_turn", usage: dict | None = None,
            model: str = "claude-sonnet-4-5-20250929", final_usage: dict | None = None) -> bytes:
    """A whole message: message_start, the blocks' events, message_delta with `stop_reason`, message_stop."""
    start_usage = {"input_tokens": 10, "output_tokens": 1, **(usage or {})}
    return (event("message_start", {"message": {"id": "msg_wire", "type": "message", "role": "assistant",
                                                "model": model, "content": [], "stop_reason": None,
                                                "usage": start_usage}})
            + b"".join(blocks)
            + event("message_delta", {"delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": 7,
                                                                                       **(final_usage or {})}})
            + event("message_stop", {}))


def text_block(index: int, *pieces: str) -> bytes:
    return (event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            + b"".join(event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": p}})
                       for p in pieces)
            + event("content_block_stop", {"index": index}))


def tool_block(index: int, name: str, *fragments: str, id: str = "toolu_wire") -> bytes:
    return (event("content_block_start", {"index": index, "content_block": {"type": "tool_use", "id": id,
                                                                              "name": name, "input": {}}})
            + b"".join(event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta",
                                                                               "partial_json": f}})
                       for f in fragments)
            + event("content_block_stop", {"index": index}))
