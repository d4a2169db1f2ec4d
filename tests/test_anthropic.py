"""Anthropic behind the OpenAI API: the request it receives, errors, the SDK, and every real recording."""

from __future__ import annotations

import asyncio

import openai
import orjson
import pytest

from tests.conftest import FAKE_KEY, recordings_dir
from tests.fakes.upstream import Reply
from tests.helpers import ANTHROPIC_TEXT_REPLY, BOUND, decode, read_events, reassemble

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


async def sent_body(upstream, gateway, **request) -> dict:
    upstream.stream(ANTHROPIC_TEXT_REPLY)
    body = {"model": "ant/claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}], **request}
    response = await gateway.post("/v2/chat/completions", json=body)
    assert response.status == 200, await response.text()
    await response.read()
    return upstream.received[-1].body


async def test_request_path_headers_and_defaults(upstream, gateway):
    body = await sent_body(upstream, gateway)
    received = upstream.received[-1]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == FAKE_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in received.headers
    assert body == {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "hi"}]}], "stream": True, "max_tokens": 4096}


async def test_conversation_with_system_tools_and_results(upstream, gateway):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                                     {"type": "image_url", "image_url": {"url": "https://example.org/a.jpg"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
            {"id": "toolu_B", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}],
         "thinking_blocks": [{"type": "thinking", "thinking": "Two calls.", "signature": "sig-1"},
                             {"type": "redacted_thinking", "data": "opaque"}]},
        {"role": "tool", "tool_call_id": "toolu_A", "content": "5C"},
        {"role": "tool", "tool_call_id": "toolu_B", "content": "20C"},
    ]
    body = await sent_body(upstream, gateway, messages=messages, tools=[WEATHER], tool_choice="required",
                           parallel_tool_calls=False, temperature=1.5, top_p=0.9, stop="END", max_tokens=300,
                           user="u-1")
    assert body["system"] == [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}]
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather in Oslo and Rome?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.org/a.jpg"}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two calls.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_B", "name": "get_weather", "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_A", "content": "5C"},
            {"type": "tool_result", "tool_use_id": "toolu_B", "content": "20C"}]},
    ]
    assert body["tools"] == [{"name": "get_weather", "description": "Weather now",
                              "input_schema": WEATHER["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["temperature"] == 1.0  # OpenAI's 0..2 range, clamped to Anthropic's 0..1
    assert body["top_p"] == 0.9 and body["stop_sequences"] == ["END"] and body["max_tokens"] == 300
    assert body["metadata"] == {"user_id": "u-1"}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}), ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
async def test_tool_choice(upstream, gateway, choice, expected):
    body = await sent_body(upstream, gateway, tools=[WEATHER], tool_choice=choice)
    assert body["tool_choice"] == expected


async def test_reasoning_effort_sets_a_thinking_budget(upstream, gateway):
    body = await sent_body(upstream, gateway, reasoning_effort="medium", temperature=0.3)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 4096 + 8192  # room for the budget and the answer
    assert "temperature" not in body  # Anthropic refuses temperature with thinking on


async def test_thinking_object_passes_as_is(upstream, gateway):
    body = await sent_body(upstream, gateway, thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=5000)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2000} and body["max_tokens"] == 5000


async def test_completions_prompt_becomes_one_user_message(upstream, gateway):
    upstream.stream(ANTHROPIC_TEXT_REPLY)
    response = await gateway.post("/v2/completions", json={"model": "ant/claude-haiku", "prompt": ["a", "b"]})
    answer = await response.json()
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == "Hi"
    assert upstream.received[-1].body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a\nb"}]}]


@pytest.mark.parametrize("bad", [
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]},
    {"messages": [{"role": "system", "content": "only a system prompt"}]},
])
async def test_unconvertible_requests_are_400s(upstream, gateway, bad):
    response = await gateway.post("/v2/chat/completions", json={"model": "ant/claude-x", **bad})
    assert response.status == 400
    assert (await response.json())["error"]["param"].startswith("messages")
    assert upstream.received == []


@pytest.mark.parametrize(("status", "kind", "client_status"), [
    (400, "invalid_request_error", 400), (401, "authentication_error", 502), (404, "not_found_error", 404),
    (429, "rate_limit_error", 429), (500, "api_error", 502), (529, "overloaded_error", 502),
])
async def test_http_errors(upstream, gateway, status, kind, client_status):
    upstream.queue(Reply(status=status, headers={"Content-Type": "application/json", "retry-after": "3"},
                         steps=[orjson.dumps({"type": "error", "error": {"type": kind, "message": f"{kind} here"}})]))
    response = await gateway.post("/v2/chat/completions", json={"model": "ant/claude-x", "stream": True,
                                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == client_status
    error = (await response.json())["error"]
    if client_status in (400, 404, 429):
        assert f"{kind} here" in error["message"]
    if status == 429:
        assert response.headers["Retry-After"] == "3"


async def test_sdk_stream_helper_accumulates_tools_and_reasoning(upstream, gateway):
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "anthropic"
    sdk = openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="unused", max_retries=0)
    upstream.stream((golden / "parallel-tool-calls.upstream.sse").read_bytes(), split=13)
    tools = [{"type": "function", "function": {"name": n, "strict": True, "parameters": {
        "type": "object", "properties": p, "required": list(p), "additionalProperties": False}}}
        for n, p in (("get_weather", {"city": {"type": "string"}}), ("get_time", {}))]
    async with sdk.chat.completions.stream(model="ant/claude-sonnet-4-5", tools=tools,
                                           messages=[{"role": "user", "content": "hi"}]) as stream:
        async for _ in stream:
            pass
        completion = await stream.get_final_completion()
    calls = completion.choices[0].message.tool_calls
    assert [(c.id, c.function.parsed_arguments) for c in calls] == [("toolu_01A", {"city": "Oslo"}),
                                                                    ("toolu_01B", {})]
    assert completion.choices[0].finish_reason == "tool_calls"

    upstream.stream((golden / "thinking-signature.upstream.sse").read_bytes(), split=5)
    async with sdk.chat.completions.stream(model="ant/claude-sonnet-4-5", reasoning_effort="low",
                                           messages=[{"role": "user", "content": "2+2?"}]) as stream:
        async for _ in stream:
            pass
        completion = await stream.get_final_completion()
    assert completion.choices[0].message.content == "4"


# ---- every real Anthropic recording ----

def _anthropic_recordings() -> list[str]:
    try:
        root = recordings_dir()
    except BaseException:
        return ["<missing>"]
    return sorted(p.name for p in (root / "anthropic").iterdir() if p.suffix in (".sse", ".jsonl"))


def _wire(name: str) -> bytes:
    path = recordings_dir() / "anthropic" / name
    if path.suffix == ".sse":
        return path.read_bytes()
    out = b""
    for line in path.read_bytes().splitlines():
        if line.strip():
            out += b"event: " + orjson.loads(line)["type"].encode() + b"\ndata: " + line + b"\n\n"
    return out


def _expected(body: bytes) -> dict:
    """A naive reading of the Messages stream, independent of the adapter."""
    from gateway.sse import SSEDecoder

    text, reasoning, tools, finish, error, usage_in, usage_out = "", "", [], None, None, 0, 0
    kinds: dict = {}
    started = False
    for event in SSEDecoder().feed(body):
        payload = orjson.loads(event.data)
        kind = payload["type"]
        if kind == "message_start" and not started:
            started = True
            usage = payload["message"]["usage"]
            usage_in = usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) + usage.get(
                "cache_creation_input_tokens", 0)
        elif kind == "content_block_start":
            block = payload["content_block"]
            kinds[payload["index"]] = block["type"]
            if block["type"] == "tool_use":
                tools.append({"name": block["name"], "arguments": ""})
        elif kind == "content_block_delta":
            delta = payload["delta"]
            if delta["type"] == "text_delta":
                text += delta["text"]
            elif delta["type"] == "thinking_delta":
                reasoning += delta["thinking"]
            elif delta["type"] == "input_json_delta" and kinds[payload["index"]] == "tool_use":
                tools[-1]["arguments"] += delta["partial_json"]
        elif kind == "message_delta":
            reason = payload["delta"]["stop_reason"]
            finish = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                      "tool_use": "tool_calls"}.get(reason, reason)
            usage = payload["usage"]
            usage_out = usage["output_tokens"]
            if "input_tokens" in usage:
                usage_in = usage["input_tokens"] + (usage.get("cache_read_input_tokens") or 0) + (
                    usage.get("cache_creation_input_tokens") or 0)
        elif kind == "error":
            error = payload["error"]
    for tool in tools:
        tool["arguments"] = tool["arguments"] or "{}"
    return {"text": text, "reasoning": reasoning, "tools": tools, "finish": finish, "error": error,
            "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out, "total_tokens": usage_in + usage_out}}


@pytest.mark.parametrize("name", _anthropic_recordings())
async def test_anthropic_recording_replays_through_gateway(name, upstream, gateway):
    body = _wire(name)
    want = _expected(body)
    upstream.stream(body, split=101)
    response = await gateway.post("/v2/chat/completions", json={
        "model": "ant/claude-sonnet-4-5", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]})
    if want["error"] and not want["text"]:
        assert response.status == 502
        return
    raw = await asyncio.wait_for(read_events(response), BOUND)
    assert raw[-1] == b"data: [DONE]"
    got = reassemble(decode(b"\n\n".join(raw)))
    choice = got["choices"][0]
    assert choice["content"] == want["text"]
    assert choice["reasoning"] == want["reasoning"]
    assert choice["tools"] == want["tools"]
    if want["error"] or want["finish"] is None:
        assert got["error"] is not None
    else:
        assert choice["finish"] == want["finish"]
        assert got["usage"] == want["usage"]


def test_blocks_are_tracked_by_index_a_tool_call_without_arguments_gets_an_empty_object():
    """anthropic.Block: a tool_use block keeps its tool-call index; one that got no input_json_delta
    sends "{}" when it stops, one that did sends nothing more; a text block's deltas stay text."""
    from types import SimpleNamespace

    from gateway.providers import anthropic
    from gateway.sse import SSEEvent

    ctx = SimpleNamespace(provider=SimpleNamespace(name="ant", secrets=()), endpoint="chat", created=1,
                          model="claude-x", request_id="r1", body={})
    state = anthropic.new_state(ctx)

    def parse(payload: dict) -> list[dict]:
        return list(anthropic.parse_event(SSEEvent(orjson.dumps(payload)), state))

    parse({"type": "message_start", "message": {"id": "msg_1"}})
    parse({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t0", "name": "a"}})
    parse({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "b"}})
    (fragment,) = parse({"type": "content_block_delta", "index": 1,
                         "delta": {"type": "input_json_delta", "partial_json": '{"x": 1}'}})
    assert fragment["choices"][0]["delta"]["tool_calls"][0]["index"] == 1
    (empty,) = parse({"type": "content_block_stop", "index": 0})
    assert empty["choices"][0]["delta"]["tool_calls"] == [{"index": 0, "function": {"arguments": "{}"}}]
    assert parse({"type": "content_block_stop", "index": 1}) == []
    assert parse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}) == []
    assert state.blocks[0].type == "tool_use" and state.blocks[1].got_arguments
    assert empty["id"] == "chatcmpl-msg_1"
