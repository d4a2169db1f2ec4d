"""Stream lifecycle over real sockets: disconnects, timeouts, keep-alives, what is sent upstream."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from tests.conftest import FAKE_KEY
from tests.fakes.upstream import HANG, Reply, Wait, chat_chunk, sse
from tests.helpers import BOUND, CHAT, ROLE, gateway_tasks, read_events, settle

async def next_event(response, buffer: bytearray) -> bytes:
    while b"\n\n" not in buffer:
        data = await asyncio.wait_for(response.content.readany(), BOUND)
        assert data, "the stream ended early"
        buffer += data
    event, _, rest = bytes(buffer).partition(b"\n\n")
    buffer[:] = rest
    return event


async def test_client_disconnect_closes_upstream_at_once(upstream, gateway):
    release = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hel"}), done=False), Wait(release),
                                sse(chat_chunk({}, "stop"))]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    buffer = bytearray()
    assert b"Hel" not in await next_event(response, buffer)  # the role chunk
    assert b"Hel" in await next_event(response, buffer)
    response.connection.transport.abort()  # the client goes away mid-stream
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)  # the upstream sees its connection closed
    assert upstream.cut_off == 1
    await settle()
    assert gateway_tasks() == []
    assert not release.is_set()


async def test_client_disconnect_before_first_chunk_closes_upstream(upstream, make_gateway):
    gateway = await make_gateway(keepalive=0.05)
    upstream.queue(Reply(steps=[HANG]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200  # committed after the keep-alive interval
    buffer = bytearray()
    assert await next_event(response, buffer) == b": keep-alive"
    response.connection.transport.abort()
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)
    await settle()
    assert gateway_tasks() == []


async def test_client_disconnect_during_non_stream_request_closes_upstream(upstream, gateway):
    upstream.queue(Reply(steps=[sse(ROLE, done=False), HANG]))
    request = asyncio.ensure_future(gateway.post("/v2/chat/completions", json={**CHAT, "stream": False}))
    while upstream.active == 0:
        await asyncio.sleep(0.01)
    request.cancel()  # the client gives up: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)
    await settle()
    assert gateway_tasks() == []


async def test_idle_timeout_ends_stream_with_error_and_closes_upstream(upstream, make_gateway):
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 5, idle: 0.3, total: 30}", keepalive=0.05)
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    events = await asyncio.wait_for(read_events(response), BOUND)
    # keep-alives went to the client while upstream was silent, and did not reset its idle timer
    assert events.count(b": keep-alive") >= 2
    error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_idle_timeout"
    assert events[-1] == b"data: [DONE]"
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)


async def test_idle_timeout_shorter_than_first_byte_is_not_held_to_first_byte(upstream, make_gateway):
    # bug: the timer armed for first_byte was not re-armed when the body began, so the first idle
    # timeout fired only at first_byte (here 60 s, past BOUND) instead of after `idle` seconds
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 60, idle: 0.3, total: 120}")
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert orjson.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_idle_timeout"
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)


async def test_total_timeout_ends_a_stream_that_never_ends(upstream, make_gateway):
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 5, idle: 5, total: 0.5}")
    trickle = [sse(chat_chunk({"content": "x"}), done=False) for _ in range(400)]
    from tests.fakes.upstream import Sleep

    steps = [sse(ROLE, done=False)]
    for piece in trickle:
        steps += [piece, Sleep(0.01)]
    upstream.queue(Reply(steps=steps))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert orjson.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_total_timeout"
    assert events[-1] == b"data: [DONE]"
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)


async def test_first_byte_timeout_before_headers_is_a_504(upstream, make_gateway):
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 0.3, idle: 5, total: 30}", keepalive=5)
    upstream.queue(Reply(before_headers=HANG))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "upstream_first_byte_timeout"
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)


async def test_first_byte_timeout_after_headers_with_no_body(upstream, make_gateway):
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 0.3, idle: 5, total: 30}", keepalive=5)
    upstream.queue(Reply(steps=[HANG]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 504
    assert (await response.json())["error"]["code"] == "upstream_first_byte_timeout"


async def test_a_failure_after_the_keepalive_commit_ends_the_stream_with_its_error(upstream, make_gateway):
    """The 200 went out at `sse_keepalive` while the first chunk was awaited: a failure then (here the
    first-byte timeout) is an error event and [DONE], and nothing is left running."""
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 0.5, idle: 5, total: 30}", keepalive=0.05)
    upstream.queue(Reply(steps=[HANG]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert events[0] == b": keep-alive"
    assert orjson.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_first_byte_timeout"
    assert events[-1] == b"data: [DONE]"
    await settle()
    assert gateway_tasks() == []


async def test_slow_first_chunk_commits_200_and_keeps_alive(upstream, make_gateway):
    gateway = await make_gateway(keepalive=0.05)
    release = asyncio.Event()
    upstream.queue(Reply(steps=[Wait(release), sse(ROLE, chat_chunk({"content": "late"}), chat_chunk({}, "stop"))]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    buffer = bytearray()
    assert await next_event(response, buffer) == b": keep-alive"
    assert await next_event(response, buffer) == b": keep-alive"
    release.set()
    events = [await next_event(response, buffer) for _ in range(4)]
    events = [e for e in events if e != b": keep-alive"]
    assert any(b'"late"' in e for e in events)


async def test_every_event_of_one_upstream_read_reaches_the_client_while_the_upstream_waits(upstream, gateway):
    """The gateway writes the events of one read together, and never keeps one back for a later read."""
    first_read_taken, release = asyncio.Event(), asyncio.Event()
    pieces = [f"piece {i} " for i in range(5)]
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "first "}), done=False), Wait(first_read_taken),
                                sse(*[chat_chunk({"content": p}) for p in pieces], done=False), Wait(release),
                                sse(chat_chunk({}, "stop"))]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    buffer = bytearray()
    assert orjson.loads((await next_event(response, buffer)).removeprefix(b"data: "))["choices"][0]["delta"] == {
        "role": "assistant", "content": ""}
    assert b'"first "' in await next_event(response, buffer)
    first_read_taken.set()
    events = [orjson.loads((await next_event(response, buffer)).removeprefix(b"data: ")) for _ in pieces]
    assert [e["choices"][0]["delta"]["content"] for e in events] == pieces
    assert not release.is_set() and not buffer  # all of it came while the upstream still held the rest
    release.set()
    assert (await next_event(response, buffer)).startswith(b"data: ")  # the finish chunk
    assert await next_event(response, buffer) == b"data: [DONE]"


async def test_stream_headers(upstream, gateway):
    upstream.stream(sse(ROLE, chat_chunk({}, "stop")))
    response = await gateway.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Length" not in response.headers
    assert response.headers["x-request-id"]
    events = await read_events(response)
    assert events[-1] == b"data: [DONE]"


async def test_upstream_request_carries_model_key_and_options(upstream, gateway):
    upstream.stream(sse(ROLE, chat_chunk({}, "stop")))
    body = {**CHAT, "stream": False, "temperature": 0.2, "top_k": 5, "user": "u1"}
    response = await gateway.post("/v2/chat/completions", json=body)
    assert response.status == 200
    sent = upstream.received[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {FAKE_KEY}"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.2 and sent.body["top_k"] == 5 and sent.body["user"] == "u1"
    assert sent.body["messages"] == CHAT["messages"]


async def test_route_alias_uses_first_enabled_target(upstream, gateway):
    upstream.stream(sse(ROLE, chat_chunk({"content": "via up"}), chat_chunk({}, "stop")))
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": "chat", "stream": False})
    assert (await response.json())["choices"][0]["message"]["content"] == "via up"
    assert upstream.received[0].body["model"] == "gpt-4o-mini"


async def test_models_and_health(gateway):
    models = await (await gateway.get("/v1/models")).json()
    ids = [m["id"] for m in models["data"]]
    assert "demo/echo" in ids and "chat" in ids
    assert models["object"] == "list"
    assert (await (await gateway.get("/healthz")).json()) == {"status": "ok"}
    verbose = await (await gateway.get("/admin/health")).json()
    assert verbose["providers"]["up"]["enabled"] is True
    assert verbose["runtime"]["in_flight"] == 0 and verbose["runtime"]["upstream_connections"] == 0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v2/chat/completions"])
async def test_demo_streams_text_and_usage(gateway, path):
    response = await gateway.post(path, json={**CHAT, "model": "demo/echo",
                                               "stream_options": {"include_usage": True}})
    events = await read_events(response)
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert 'You wrote: "hi"' in text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert events[-1] == b"data: [DONE]"


async def test_demo_calls_a_tool_when_tools_are_given(gateway):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"]}}}]
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": "demo/echo", "stream": False,
                                                                 "tools": tools})
    choice = (await response.json())["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "hi", "days": 1}


async def test_many_concurrent_streams_all_complete(upstream, gateway):
    upstream.default = Reply(steps=[sse(ROLE, *[chat_chunk({"content": f"{i} "}) for i in range(20)],
                                        chat_chunk({}, "stop"))])

    async def one():
        response = await gateway.post("/v2/chat/completions", json=CHAT)
        events = await read_events(response)
        return events[-1] == b"data: [DONE]" and len(events) == 23

    assert all(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(50))), BOUND * 3))
    assert len(upstream.received) == 50


async def test_upstream_connection_reused_after_complete_stream(upstream, gateway):
    upstream.default = Reply(steps=[sse(ROLE, chat_chunk({}, "stop"))])
    for _ in range(3):
        response = await gateway.post("/v2/chat/completions", json=CHAT)
        await read_events(response)
    ports = {r.headers.get("X-Forwarded-Port") for r in upstream.received}
    assert len(upstream.received) == 3 and ports == {None}
    session: aiohttp.ClientSession = gateway.app[__import__("gateway.appkeys").appkeys.SESSION]
    assert sum(len(v) for v in session.connector._conns.values()) == 1  # one pooled connection served all three


async def test_request_id_from_the_proxy_is_kept_and_a_bad_one_replaced(upstream, gateway):
    upstream.stream(sse(ROLE, chat_chunk({}, "stop")))
    response = await gateway.post("/v2/chat/completions", json=CHAT, headers={"X-Request-Id": "nginx-42.a"})
    assert response.headers["x-request-id"] == "nginx-42.a"
    await response.read()
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": "nope/x"},
                                  headers={"X-Request-Id": "bad id\r\nX-Evil: 1"[:6] + "\u00e9"})
    assert response.status == 404
    assert response.headers["x-request-id"] != "bad id\u00e9" and len(response.headers["x-request-id"]) == 32
