"""Every real recording in ../shared/recordings (OpenAI and compatible providers), replayed through the
gateway, reassembles to what the recording itself says: text, reasoning, tool calls, finish, usage, errors.

The reference reassembly below is deliberately naive and independent of the gateway's code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from gateway.sse import SSEDecoder
from tests.conftest import recordings_dir
from tests.test_streaming import BOUND, read_events

KINDS = ("openai", "openai-compatible")


def _recordings() -> list[str]:
    try:
        root = recordings_dir()
    except BaseException:  # skipped or failed here: let the test itself report it
        return ["<missing>"]
    return sorted(f"{p.parent.name}/{p.name}" for kind in KINDS for p in (root / kind).iterdir()
                  if p.suffix in (".sse", ".jsonl"))


def wire_bytes(name: str) -> bytes:
    path = recordings_dir() / name
    if path.suffix == ".sse":
        return path.read_bytes()
    # JSONL recordings kept only the payloads: put back OpenAI's framing and its [DONE]
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def _text(value) -> tuple[str, str]:
    if isinstance(value, str):
        return value, ""
    text, reasoning = "", ""
    for part in value or ():
        if part.get("type") == "text":
            text += part.get("text", "")
        elif part.get("type") == "thinking":
            reasoning += "".join(p.get("text", "") for p in part.get("thinking", ()))
    return text, reasoning


def reassemble(events: list[tuple[str | None, dict | None]], text_completion: bool = False) -> dict:
    """What a careful client would make of a stream: per choice text, reasoning, tools, finish; usage; error."""
    out: dict = {"choices": {}, "usage": None, "error": None}
    for event, chunk in events:
        if chunk is None:
            continue
        if event == "error" or chunk.get("error"):
            out["error"] = out["error"] or chunk.get("error")
            continue
        usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        if usage:
            out["usage"] = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        for choice in chunk.get("choices") or ():
            slot = out["choices"].setdefault(choice.get("index", 0), {
                "content": "", "reasoning": "", "refusal": "", "tools": {}, "finish": None})
            if text_completion:
                slot["content"] += choice.get("text") or ""
            delta = choice.get("delta") or {}
            text, thinking = _text(delta.get("content"))
            slot["content"] += text
            slot["reasoning"] += delta.get("reasoning_content") or delta.get("reasoning") or thinking
            slot["refusal"] += delta.get("refusal") or ""
            for call in delta.get("tool_calls") or ():
                key = call.get("index")
                tool = slot["tools"].setdefault(key, {"name": "", "arguments": ""})
                tool["name"] += (call.get("function") or {}).get("name") or ""
                tool["arguments"] += (call.get("function") or {}).get("arguments") or ""
            if choice.get("finish_reason") and slot["finish"] is None:
                slot["finish"] = choice["finish_reason"]
    for slot in out["choices"].values():
        slot["tools"] = [slot["tools"][k] for k in slot["tools"]]  # order of appearance, indexes aside
    return out


def decode(body: bytes) -> list[tuple[str | None, dict | None]]:
    decoded = []
    for event in SSEDecoder().feed(body + b"\n\n"):
        if event.data == b"[DONE]":
            continue
        try:
            decoded.append((event.event, orjson.loads(event.data)))
        except orjson.JSONDecodeError:
            decoded.append((event.event, None))
    return decoded


@pytest.mark.parametrize("name", _recordings())
async def test_recording_replays_through_gateway(name, upstream, gateway):
    body = wire_bytes(name)
    events = decode(body)
    completions = "completions" in name
    expected = reassemble(events, text_completion=completions)
    choices = max(len(expected["choices"]), 1)

    upstream.stream(body, split=97)
    request = {"model": "up/some-model", "stream": True, "stream_options": {"include_usage": True}}
    if completions:
        path, request["prompt"] = "/v2/completions", "Say"
    else:
        path, request["messages"] = "/v2/chat/completions", [{"role": "user", "content": "hi"}]
    if choices > 1:
        request["n"] = choices
    response = await gateway.post(path, json=request)

    if response.status != 200:  # an error before any content keeps its HTTP status
        assert expected["error"] is not None and not any(
            c["content"] or c["tools"] for c in expected["choices"].values()), await response.text()
        return
    raw = await asyncio.wait_for(read_events(response), BOUND)
    assert raw[-1] == b"data: [DONE]"
    got = reassemble(decode(b"\n\n".join(raw)), text_completion=completions)
    for index, want in expected["choices"].items():
        have = got["choices"][index]
        assert have["content"] == want["content"]
        assert have["reasoning"] == want["reasoning"]
        assert have["refusal"] == want["refusal"]
        assert have["tools"] == want["tools"]
        assert have["finish"] == want["finish"] or (want["finish"] is None and got["error"])
    if expected["error"] is not None or any(c["finish"] is None for c in expected["choices"].values()):
        assert got["error"] is not None  # a failed or cut stream ends in an error event, never a made-up stop
    else:
        assert got["error"] is None
        assert got["usage"] == expected["usage"]
        for chunk in (c for _, c in decode(b"\n\n".join(raw)) if c):
            assert chunk["object"] == ("text_completion" if completions else "chat.completion.chunk")


def _shapes(body: bytes) -> set[tuple]:
    shapes = set()
    for _, chunk in decode(body):
        if chunk and chunk.get("choices"):
            top = tuple(k for k in chunk if k != "obfuscation")
            shapes.add((top, tuple(chunk["choices"][0])))
    return shapes


def test_fake_openai_chunks_have_the_recorded_shape():
    """Our hand-written OpenAI fixtures use the field order and compact framing of the real API."""
    recorded = set()
    for path in (recordings_dir() / "openai").glob("chat-*.sse"):
        recorded |= _shapes(path.read_bytes())
    ours = Path(__file__).parent / "golden" / "openai"
    for name in ("text-basic", "tool-calls-parallel-split-args", "two-choices-interleaved", "refusal"):
        body = (ours / f"{name}.upstream.sse").read_bytes()
        assert _shapes(body) <= recorded, name
        for event in SSEDecoder().feed(body):
            if event.data != b"[DONE]":  # compact JSON, as OpenAI sends it
                assert orjson.dumps(orjson.loads(event.data)) == event.data
        assert body.endswith(b"data: [DONE]\n\n") and b"\r" not in body
