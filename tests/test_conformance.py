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
from tests.helpers import BOUND, decode, read_events, reassemble

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
