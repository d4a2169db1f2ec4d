"""Plain helpers more than one test module uses: requests and keys, reading a stream, error bodies,
provider payloads, a `gateway serve` process. Fixtures stay in conftest.py; the fake upstreams and their
wire helpers (sse(), chat_chunk(), Reply...) in tests/fakes/. Test modules import from here, never from
each other."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.providers import gemini_stream
from gateway.sse import SSEDecoder, SSEEvent
from tests.fakes.upstream import Sleep, chat_chunk

REPO = Path(__file__).resolve().parents[1]
BOUND = 10  # seconds: a bound on waits so that a broken gateway fails the test instead of hanging it
FAKE_KEY = "sk-test-GATEWAYSECRET0123456789abcdef"  # the fake providers' API key

# ------------------------------------------------------------------------------------ requests and keys

CHAT = {"model": "up/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
ROLE = chat_chunk({"role": "assistant", "content": ""})
JSON = {"Content-Type": "application/json"}
STRICT_TOOLS = [
    {"type": "function", "function": {"name": name, "strict": True, "parameters": {
        "type": "object", "properties": {arg: {"type": "string"}}, "required": [arg], "additionalProperties": False}}}
    for name, arg in (("get_weather", "city"), ("get_time", "tz"))
]


def digest(key: str) -> str:
    """A client key's sha256, as `keys:` in providers.yaml holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -------------------------------------------------------------------------------------- reading answers

async def read_events(response) -> list[bytes]:
    """The raw SSE events (data and comments) of a response, in order."""
    events, buffer = [], b""
    async for data in response.content.iter_any():
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            events.append(event)
    return events


def text_of(events: list[bytes]) -> str:
    """The streamed text of every choice, in order, from read_events()' events."""
    text = ""
    for event in events:
        if event.startswith(b"data: {") and b'"choices"' in event:
            for choice in orjson.loads(event[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def decode(body: bytes) -> list[tuple[str | None, dict | None]]:
    """A whole SSE body as (event name, JSON payload or None), [DONE] left out."""
    decoded = []
    for event in SSEDecoder().feed(body + b"\n\n"):
        if event.data == b"[DONE]":
            continue
        try:
            decoded.append((event.event, orjson.loads(event.data)))
        except orjson.JSONDecodeError:
            decoded.append((event.event, None))
    return decoded


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


# ------------------------------------------------------------------------------------------------ errors

def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> bytes:
    """An OpenAI-style error body, as a fake provider sends it."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


def assert_openai_error(payload: dict) -> dict:
    """The gateway's error shape, exactly: {"error": {message, type, param, code}} with a message."""
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload["error"]


# ------------------------------------------------------------------------------------- gateway's tasks

def gateway_tasks() -> list[asyncio.Task]:
    """Tasks still running gateway code (the test's own task aside)."""
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and "gateway" in repr(t.get_coro())]


async def waits_until_cancelled(ended: list[str]) -> None:
    """A coroutine that waits until it is cancelled, and notes in `ended` that its `finally` ran."""
    try:
        await asyncio.Event().wait()
    finally:
        ended.append("finally")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


async def assert_nothing_left(gateway, upstream) -> None:
    """No reply still running on the fake, no connection held by the gateway, no gateway task alive."""
    async with asyncio.timeout(BOUND):
        while True:
            runtime = (await (await gateway.get("/admin/health")).json())["runtime"]
            if upstream.active == 0 and runtime["in_flight"] == 0 and runtime["upstream_connections"] == 0:
                break
            await asyncio.sleep(0.02)
    await settle()
    assert gateway_tasks() == []


# ------------------------------------------------------------------------------- providers' payloads

ANTHROPIC_TEXT_REPLY = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,'
    b'"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def gemini_wire(*payloads: object) -> bytes:
    """Gemini's framing: compact JSON with a space after each colon, CRLF CRLF, no [DONE]."""
    return b"".join(b"data: " + json.dumps(p, separators=(",", ": "), ensure_ascii=False).encode() + b"\r\n\r\n"
                    for p in payloads)


def gemini_answer(*parts: dict, finish: str | None = "STOP", index: int | None = 0, **extra) -> dict:
    """One streamGenerateContent payload with one candidate made of `parts`."""
    candidate: dict = {"content": {"parts": list(parts), "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    if index is not None:
        candidate["index"] = index
    return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "resp1", **extra}


GEMINI_OK_STREAM = gemini_wire(gemini_answer({"text": "ok"}))


def gemini_state(choices: int = 1) -> gemini_stream.State:
    """gemini_stream's parser state for a chat request, without a gateway."""
    ctx = SimpleNamespace(provider=SimpleNamespace(name="gem", secrets=(FAKE_KEY,)), choices=choices,
                          endpoint="chat", created=1782955817, model="gemini-x")
    return gemini_stream.State(ctx)


def gemini_parse(state, *payloads) -> list[dict]:
    """The chunks gemini_stream.parse_event makes of `payloads` (dicts or raw bytes), in order."""
    chunks = []
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        chunks.extend(gemini_stream.parse_event(SSEEvent(data), state))
    return chunks


def openai_follow_up(body: dict) -> list:
    """The tool calls and results an OpenAI-format follow-up request sends back, as (id, name, value)."""
    calls = [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
             for c in body["messages"][1]["tool_calls"]]
    results = [(m["role"], m["tool_call_id"], orjson.loads(m["content"])) for m in body["messages"][2:]]
    return calls + results


def anthropic_follow_up(body: dict) -> list:
    calls = [(b["id"], b["name"], b["input"]) for b in body["messages"][1]["content"] if b["type"] == "tool_use"]
    results = [("tool", b["tool_use_id"], orjson.loads(b["content"])) for b in body["messages"][2]["content"]]
    return calls + results


def gemini_follow_up(body: dict) -> list:
    calls = [(p.get("thoughtSignature"), p["functionCall"]["name"], p["functionCall"]["args"])
             for p in body["contents"][1]["parts"] if "functionCall" in p]
    results = [("tool", p["functionResponse"]["name"], p["functionResponse"]["response"])
               for p in body["contents"][2]["parts"]]
    return calls + results


# ------------------------------------------------------------------------------------------- examples

EXAMPLES_PACE = 0.05  # seconds between writes that must reach the client as separate reads (pacing, not a check)
EXAMPLES_CLIENT_KEY = "gw-example-key-0123456789"
EXAMPLES_KEYS = f"keys:\n  - {{id: examples, sha256: {digest(EXAMPLES_CLIENT_KEY)}}}\n"


def cut_inside_characters(data: bytes) -> list:
    """The fake's steps for `data` written in pieces that end inside each multi-byte UTF-8 character, each
    piece given time to arrive on its own, so that the client reads characters in halves."""
    steps: list = []
    start = 0
    for position, byte in enumerate(data):
        if byte >= 0xC0:  # the first byte of a multi-byte character: cut just after it
            steps += [data[start:position + 1], Sleep(EXAMPLES_PACE)]
            start = position + 1
    return steps + [data[start:]]


# --------------------------------------------------------------------------- a raw HTTP/1.1 exchange

BOUNDARY_KEY = "gwk-boundary-0123456789abcdefSECRET"


def post(body: bytes, *headers: str, length: int | None = None, key: str | None = BOUNDARY_KEY) -> bytes:
    """A raw POST /v1/chat/completions with `body` and the given extra header lines."""
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: gateway", "Content-Type: application/json",
             f"Content-Length: {len(body) if length is None else length}", *headers]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response with a Content-Length; a hang guard bounds the wait."""
    async with asyncio.timeout(BOUND):
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.strip().split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await connect(port)
    try:
        writer.write(data)
        return await read_response(reader)
    finally:
        writer.close()


# ----------------------------------------------------------------------- a `gateway serve` process

SERVE_WAIT = 60  # hang guard for a process that should answer in well under a second


def serve_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SURELY_UNSET_VAR_CLI", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_serve(*args: str) -> subprocess.Popen:
    """`python -m gateway serve` with `args`, from the repo root, stdout and stderr piped as text."""
    return subprocess.Popen([sys.executable, "-m", "gateway", "serve", *args], cwd=REPO, env=serve_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def wait_healthy(process: subprocess.Popen, url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(SERVE_WAIT * 10):
            if process.poll() is not None:
                pytest.fail(f"gateway serve exited early with {process.returncode}: {process.stderr.read()}")
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        assert await response.json() == {"status": "ok"}
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("gateway serve never answered /healthz")


def stop_serve(process: subprocess.Popen) -> tuple[int, str]:
    """SIGTERM, then the exit code and stderr; a process that does not stop fails the test."""
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=SERVE_WAIT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail("gateway serve did not stop on SIGTERM")
    return process.returncode, stderr


# ---------------------------------------------------------------------------------------------- example scripts

EXAMPLE_BOUND = 30  # seconds: a hung example script fails the test instead of hanging the suite


@dataclass
class ScriptRun:
    code: int
    out: str
    err: str


async def run_script(argv: list[str], env: dict[str, str]) -> ScriptRun:
    """An example script run to its end (killed past EXAMPLE_BOUND), with its exit code and output."""
    process = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), EXAMPLE_BOUND)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return ScriptRun(process.returncode, out.decode(), err.decode())


def via(gateway: Any) -> tuple[str, str]:
    """The option that points an example at a test gateway."""
    return "--base-url", str(gateway.make_url("/v1"))
