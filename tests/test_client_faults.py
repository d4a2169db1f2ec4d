"""Clients that misbehave, through the gateway in front of the fake upstream: disconnects anywhere, slow readers.

Each test checks what a leak would show: the upstream connection closed, nothing in flight, no upstream
connection held, no task left behind. Conditions are awaited with a generous bound, never timed.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from tests.conftest import gateway_yaml
from tests.fakes.upstream import Reply, Wait, chat_chunk, sse

CHAT = {"model": "up/gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}]}
BOUND = 10  # seconds: a bound on waits so that a broken gateway fails the test instead of hanging it
CONTENT_CHUNKS = 5
USAGE = {"prompt_tokens": 3, "completion_tokens": CONTENT_CHUNKS, "total_tokens": 3 + CONTENT_CHUNKS}
# what the gateway sends while the upstream holds its [DONE]: the role chunk, the content chunks, the finish
# chunk (normalize holds the usage chunk until the upstream's stream has ended)
EVENTS_BEFORE_DONE = 1 + CONTENT_CHUNKS + 1


async def eventually(condition, what) -> None:
    """Waits until `condition()` holds; fails after BOUND seconds (a bound on a hang, not a timing check).
    `what` says what was awaited: a string, or a function giving one at the time of the failure."""
    try:
        async with asyncio.timeout(BOUND):
            while not await condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"not within {BOUND} s: {what() if callable(what) else what}")


def server_connection_task(task: asyncio.Task) -> bool:
    """An aiohttp server's task for a kept-alive connection (the test client pools its connections)."""
    return getattr(task.get_coro(), "__qualname__", "") == "RequestHandler.start"


def tasks_now() -> set[asyncio.Task]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done() and not server_connection_task(t)}


async def assert_nothing_left(gateway, tasks_before: set[asyncio.Task]) -> None:
    """No request in flight, no upstream connection held, and no task beyond those from before the request."""

    async def runtime_quiet() -> bool:
        runtime = (await (await gateway.get("/admin/health")).json())["runtime"]
        return runtime["in_flight"] == 0 and runtime["upstream_connections"] == 0

    async def no_new_tasks() -> bool:
        return not (tasks_now() - tasks_before)

    await eventually(runtime_quiet, "in_flight and upstream_connections back to 0")
    await eventually(no_new_tasks, lambda: f"no task left behind; left: {tasks_now() - tasks_before}")


def held_stream() -> Reply:
    """A whole answer but for its [DONE], which the upstream holds back for good: the upstream connection
    is still in use at every point the client can leave at."""
    events = [chat_chunk({"role": "assistant", "content": ""})]
    events += [chat_chunk({"content": f"part{i} "}) for i in range(CONTENT_CHUNKS)]
    events += [chat_chunk({}, "stop"), chat_chunk(choices=[], usage=USAGE)]
    return Reply(steps=[sse(event, done=False) for event in events] + [Wait(asyncio.Event()), b"data: [DONE]\n\n"])


async def test_client_disconnect_during_the_peek_before_the_200(upstream, gateway):
    upstream.queue(Reply(steps=[Wait(asyncio.Event()), sse(chat_chunk({}, "stop"))]))  # no first chunk yet
    tasks_before = tasks_now()
    request = asyncio.ensure_future(gateway.post("/v2/chat/completions", json=CHAT))

    async def upstream_asked() -> bool:
        return upstream.active == 1

    await eventually(upstream_asked, "the upstream got the request")
    request.cancel()  # the client gives up before any header came back: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)
    assert upstream.cut_off == 1
    await assert_nothing_left(gateway, tasks_before)


@pytest.mark.parametrize("chunks_read", range(EVENTS_BEFORE_DONE + 1))
async def test_client_disconnect_after_any_number_of_chunks(upstream, gateway, chunks_read):
    """0: right after the 200, before reading any event; EVENTS_BEFORE_DONE: after the last chunk, before [DONE]."""
    upstream.queue(held_stream())
    tasks_before = tasks_now()
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    buffer = b""
    async with asyncio.timeout(BOUND):
        while buffer.count(b"\n\n") < chunks_read:
            data = await response.content.readany()
            assert data, "the stream ended early"
            buffer += data
    assert b"[DONE]" not in buffer
    response.connection.transport.abort()  # the client goes away
    await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)  # and so does the upstream connection
    assert upstream.cut_off == 1
    assert upstream.completed == 0
    await assert_nothing_left(gateway, tasks_before)


def long_stream(chunks: int, piece: str) -> tuple[Reply, int]:
    """A whole answer of numbered content chunks (one write each), and its size in bytes."""
    events = [chat_chunk({"role": "assistant", "content": ""})]
    events += [chat_chunk({"content": f"{i:06d}{piece}"}) for i in range(chunks)]
    events += [chat_chunk({}, "stop"), chat_chunk(choices=[], usage=USAGE)]
    steps = [sse(event, done=False) for event in events] + [b"data: [DONE]\n\n"]
    return Reply(steps=steps), sum(map(len, steps))


def check_whole_answer(body: bytes, chunks: int, piece: str) -> None:
    """Every content chunk once and in order, the finish, the usage, then [DONE] and nothing after it."""
    events = body.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    payloads = [orjson.loads(e.removeprefix(b"data: ")) for e in events[:-2] if not e.startswith(b":")]
    contents = [p["choices"][0]["delta"].get("content") for p in payloads if p["choices"]]
    assert contents[1:-1] == [f"{i:06d}{piece}" for i in range(chunks)]
    assert payloads[-2]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["usage"]["completion_tokens"] == CONTENT_CHUNKS


def small_receive_buffer(addr_info) -> socket.socket:
    """The slow client's socket, with a small kernel receive buffer set before connecting: the TCP
    window stays small, so what the client does not read backs up into the gateway at once."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


def slow_client() -> aiohttp.ClientSession:
    # read_bufsize: aiohttp stops reading the socket once this much is waiting unread
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=small_receive_buffer),
                                 read_bufsize=1024)


async def test_slow_reader_gets_the_whole_answer_intact(upstream, gateway):
    chunks, piece = 200, "slowly " * 20
    reply, _ = long_stream(chunks, piece)
    upstream.queue(reply)
    tasks_before = tasks_now()
    body = bytearray()
    async with slow_client() as client:
        async with client.post(gateway.make_url("/v2/chat/completions"), json=CHAT) as response:
            assert response.status == 200
            async with asyncio.timeout(BOUND * 3):
                while data := await response.content.read(256):  # tiny reads, a pause after each
                    body += data
                    await asyncio.sleep(0.001)
    check_whole_answer(bytes(body), chunks, piece)
    assert upstream.completed == 1 and upstream.cut_off == 0
    await assert_nothing_left(gateway, tasks_before)


async def test_a_client_that_stops_reading_holds_the_upstream_back(upstream, gateway):
    """The gateway waits for the client's socket to drain before it reads on: the upstream's writes
    block, instead of the gateway buffering the answer. The answer is larger than what the sockets
    on the way can hold (their kernel buffers and the gateway's), so the upstream cannot finish."""
    chunks, piece = 4000, "x" * 4000
    reply, total = long_stream(chunks, piece)  # 16 MB
    upstream.queue(reply)
    tasks_before = tasks_now()

    def gateway_connections() -> list:
        return gateway.server.runner.server.connections  # the gateway's server side of each client connection

    async def quiescent() -> bool:
        """Both the upstream's writes and the gateway's writes to the client are held, and stay held."""
        if not (upstream.writing_paused() and any(c.writing_paused for c in gateway_connections())):
            return False
        written = upstream.bytes_written
        for _ in range(20):
            await asyncio.sleep(0)  # event loop turns: anything still flowing moves in them
        return upstream.bytes_written == written

    async with slow_client() as client:
        async with client.post(gateway.make_url("/v2/chat/completions"), json=CHAT) as response:
            assert response.status == 200
            await eventually(quiescent, "the upstream and the gateway held back by the client")
            assert upstream.completed == 0, "the upstream finished an answer the client has not read"
            assert upstream.bytes_written < total
            # what the gateway itself buffers for the client is bounded, whatever the answer's size
            held = max(c.transport.get_write_buffer_size() for c in gateway_connections() if c.transport)
            assert held < 1 << 20
            async with asyncio.timeout(BOUND * 3):
                body = await response.content.read()
    check_whole_answer(body, chunks, piece)
    assert upstream.completed == 1
    await assert_nothing_left(gateway, tasks_before)


async def provider_health(gateway) -> dict:
    return (await (await gateway.get("/admin/health")).json())["providers"]["up"]


def quiescent_check(upstream, gateway):
    def gateway_connections() -> list:
        return gateway.server.runner.server.connections

    async def quiescent() -> bool:
        if not (upstream.writing_paused() and any(c.writing_paused for c in gateway_connections())):
            return False
        written = upstream.bytes_written
        for _ in range(20):
            await asyncio.sleep(0)
        return upstream.bytes_written == written

    return quiescent


async def test_a_client_that_stops_reading_does_not_count_against_the_provider(upstream, make_gateway):
    """The upstream read waits while the gateway waits on the client: that is not the provider being idle.
    One failure would put the provider in a cooldown here, so one wrong timeout would show."""
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 0.3, idle: 0.3, max_silence: 0.3, total: 60}",
                                 resilience="retry: {attempts: 1}\n    health: {max_failures: 1, cooldown: 60}")
    chunks, piece = 4000, "x" * 4000
    reply, _ = long_stream(chunks, piece)
    upstream.queue(reply)
    tasks_before = tasks_now()
    async with slow_client() as client:
        async with client.post(gateway.make_url("/v2/chat/completions"), json=CHAT) as response:
            assert response.status == 200
            await eventually(quiescent_check(upstream, gateway), "the upstream and the gateway held back")
            await asyncio.sleep(1.5)  # five idle (and silence) timeouts pass while the client reads nothing
            assert (await provider_health(gateway))["state"] == "ok"
            async with asyncio.timeout(BOUND * 3):
                body = await response.content.read()
    assert b'"error"' not in body[-1000:], body[-1000:]
    check_whole_answer(body, chunks, piece)
    health = await provider_health(gateway)
    assert health["state"] == "ok" and health["failures"] == 0 and health["successes"] == 1
    await assert_nothing_left(gateway, tasks_before)


async def test_a_client_that_does_not_read_within_send_timeout_is_dropped(upstream, aiohttp_client, caplog):
    yaml = gateway_yaml(upstream.url, resilience="retry: {attempts: 1}\n    health: {max_failures: 1, cooldown: 60}")
    yaml = yaml.replace("max_body_bytes: 65536", "max_body_bytes: 65536, send_timeout: 0.5")
    gateway = await aiohttp_client(create_app(parse_config(yaml)))
    reply, total = long_stream(4000, "x" * 4000)
    upstream.queue(reply)
    tasks_before = tasks_now()
    caplog.set_level(logging.INFO, logger="gateway")
    async with slow_client() as client:
        async with client.post(gateway.make_url("/v2/chat/completions"), json=CHAT) as response:
            assert response.status == 200
            # the client reads nothing more; the idle timeout (5 s) is not what ends this
            await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)  # the upstream call was cancelled
    assert upstream.completed == 0 and upstream.bytes_written < total
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request ")]
    assert any("outcome=client_too_slow" in line for line in lines), lines
    health = await provider_health(gateway)
    assert health["state"] == "ok" and health["failures"] == 0
    await assert_nothing_left(gateway, tasks_before)


@pytest.mark.parametrize("value", [0, -1, "soon"])
def test_send_timeout_is_validated(value):
    yaml = gateway_yaml("http://127.0.0.1:1").replace("max_body_bytes: 65536",
                                                      f"max_body_bytes: 65536, send_timeout: {value}")
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml)
    assert "server.send_timeout" in str(raised.value)


def test_send_timeout_default():
    assert parse_config(gateway_yaml("http://127.0.0.1:1")).server.send_timeout == 30
