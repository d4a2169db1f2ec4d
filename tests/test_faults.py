"""The fault suite: a fake upstream misbehaving in each way a provider does, and what the client sees.

Every case also checks that afterwards no upstream connection is open (on either side) and no
gateway task is left. Retries are on (two tries, no backoff) so that a fault before any content is
shown both as the client sees it when it persists and when the second try answers.
The client's own faults (random disconnects, very slow reads) are in test_client_faults.py.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

import orjson
import pytest

from tests.fakes.upstream import HANG, RESET, Reply, Sleep, chat_chunk, sse
from tests.helpers import (BOUND, CHAT, JSON, ROLE, assert_nothing_left, assert_openai_error, error_body, read_events, text_of)

RETRIES = "retry: {attempts: 2, backoff_initial: 0, backoff_max: 0, retry_after_max: 1}\n    health: {max_failures: 0}"
TIMEOUTS = "{connect: 1, first_byte: 0.4, idle: 0.4, total: 30}"
ANSWER = sse(ROLE, chat_chunk({"content": "Hello"}), chat_chunk({"content": " there"}), chat_chunk({}, "stop"))
STARTED = sse(ROLE, chat_chunk({"content": "Hel"}), done=False)  # content reached the client
GIANT = b"data: " + b'{"pad":"' + b"x" * (1 << 20) + b'"}\n\n'


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens here once the probe is closed


@pytest.fixture
async def gateway(make_gateway):
    down = f"  - name: down\n    kind: openai\n    base_url: http://127.0.0.1:{closed_port()}/v1\n    {RETRIES}\n"
    return await make_gateway(resilience=RETRIES, timeouts=TIMEOUTS, keepalive=15, extra_provider=down,
                              extra_routes="  fallback: [down/m, up/gpt-4o-mini]")


def error_of(event: bytes) -> dict:
    return orjson.loads(event.removeprefix(b"data: "))["error"]


@dataclass
class Fault:
    reply: Reply
    status: int  # what the client gets when the fault persists on every try
    code: str


def http_failure(status: int, headers: dict | None = None) -> Reply:
    return Reply(status=status, headers={**JSON, **(headers or {})}, steps=[error_body(f"upstream says {status}")])


# Faults before any content: retried, then reported with the status that matters.
BEFORE_CONTENT = {
    "reset before the headers": Fault(Reply(before_headers=RESET), 502, "upstream_reset"),
    "500": Fault(http_failure(500), 502, "upstream_error"),
    "502": Fault(http_failure(502), 502, "upstream_error"),
    "503": Fault(http_failure(503), 502, "upstream_error"),
    "529": Fault(http_failure(529), 502, "upstream_error"),
    "429 with retry-after": Fault(http_failure(429, {"retry-after": "1", "x-ratelimit-remaining-tokens": "0"}),
                                  429, "upstream_rate_limited"),
    "hang before the first byte": Fault(Reply(before_headers=HANG), 504, "upstream_first_byte_timeout"),
    "hang after the headers": Fault(Reply(steps=[HANG]), 504, "upstream_first_byte_timeout"),
    "html error page with 200": Fault(Reply(steps=[b"<html><body>502 Bad Gateway</body></html>"],
                                            headers={"Content-Type": "text/html"}), 502, "upstream_bad_stream"),
    "html labelled as event-stream": Fault(Reply(steps=[b"<html><body>oops</body></html>\n"]), 502,
                                           "upstream_truncated"),
    "error event after 200": Fault(Reply(steps=[sse(ROLE, {"error": {"message": "busy", "code": 503}})]), 502,
                                   "upstream_error"),
    "giant first line": Fault(Reply(steps=[GIANT]), 502, "upstream_bad_stream"),
    "reset after the role chunk": Fault(Reply(steps=[sse(ROLE, done=False), RESET]), 502, "upstream_reset"),
}


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("name", list(BEFORE_CONTENT))
async def test_fault_before_content_that_persists(upstream, gateway, name, stream):
    fault = BEFORE_CONTENT[name]
    upstream.default = fault.reply
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "stream": stream})
    assert response.status == fault.status
    error = assert_openai_error(await response.json())
    assert error["code"] == fault.code
    assert len(upstream.received) == 2
    if fault.status == 429:
        assert response.headers["Retry-After"] == "1"
        assert response.headers["x-ratelimit-remaining-tokens"] == "0"
    await assert_nothing_left(gateway, upstream)


@pytest.mark.parametrize("name", list(BEFORE_CONTENT))
async def test_fault_before_content_that_passes(upstream, gateway, name):
    upstream.queue(BEFORE_CONTENT[name].reply)
    upstream.default = Reply(steps=[ANSWER])
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    events = await read_events(response)
    assert text_of(events) == "Hello there"
    assert events[-1] == b"data: [DONE]" and b'"finish_reason":"stop"' in events[-2]
    await assert_nothing_left(gateway, upstream)


@pytest.mark.parametrize("model", ["down/m", "fallback"])
async def test_connection_refused(upstream, gateway, model):
    upstream.default = Reply(steps=[ANSWER])
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": model})
    if model == "down/m":
        assert response.status == 502
        assert assert_openai_error(await response.json())["code"] == "upstream_unreachable"
    else:  # the route falls back to the provider that listens
        assert text_of(await read_events(response)) == "Hello there"
    await assert_nothing_left(gateway, upstream)


# Faults after content reached the client: an error event naming what happened, then [DONE].
AFTER_CONTENT = {
    "reset mid-stream": ([STARTED, RESET], "upstream_reset", 502),
    "hang mid-stream": ([STARTED, HANG], "upstream_idle_timeout", 504),
    "cut final chunk, no terminator": ([STARTED, b'data: {"id":"chatcmpl-fake1","object":"chat.comp'],
                                       "upstream_truncated", 502),
    "no finish reason, clean end": ([STARTED], "upstream_truncated", 502),
    "giant line mid-stream": ([STARTED, GIANT], "upstream_bad_stream", 502),
    "provider error event mid-stream": ([STARTED, b'event: error\ndata: {"error":{"message":"tool_use_failed"}}\n\n'],
                                        "upstream_stream_error", 502),
}


@pytest.mark.parametrize("name", list(AFTER_CONTENT))
async def test_fault_after_content_streams(upstream, gateway, name):
    steps, code, _ = AFTER_CONTENT[name]
    upstream.default = Reply(steps=steps)
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert text_of(events) == "Hel"
    assert error_of(events[-2])["code"] == code
    assert events[-1] == b"data: [DONE]"
    assert b"finish_reason\":\"stop" not in b"".join(events), "a cut answer must not look complete"
    assert len(upstream.received) == 1, "content reached the client: no retry"
    await assert_nothing_left(gateway, upstream)


@pytest.mark.parametrize("name", list(AFTER_CONTENT))
async def test_fault_after_content_non_stream_is_an_http_error(upstream, gateway, name):
    steps, code, status = AFTER_CONTENT[name]
    upstream.default = Reply(steps=steps)
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "stream": False})
    assert response.status == status
    assert assert_openai_error(await response.json())["code"] == code
    assert len(upstream.received) == 2, "nothing was sent yet: the whole answer is retried"
    await assert_nothing_left(gateway, upstream)


async def test_idle_timeout_counts_from_a_body_that_began_late(upstream, make_gateway):
    """The read timer checks at the idle limit's time too, so that first data normally needs no new timer;
    data that comes later than that (but within first_byte) must still re-arm it at the idle limit: with
    first_byte at 300 s, a timer left at first_byte would hold this stream past BOUND."""
    gateway = await make_gateway(timeouts="{connect: 2, first_byte: 300, idle: 0.2, total: 600}")
    upstream.default = Reply(steps=[Sleep(0.5), sse(ROLE, chat_chunk({"content": "Hel"}), done=False), HANG])
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert text_of(events) == "Hel"
    assert error_of(events[-2])["code"] == "upstream_idle_timeout"
    await assert_nothing_left(gateway, upstream)


async def test_malformed_json_line_is_skipped(upstream, gateway, caplog):
    upstream.default = Reply(steps=[sse(ROLE, chat_chunk({"content": "Hello"}), b'{"id": "chatcmpl-x", "choi',
                                        b"[1, 2]", chat_chunk({"content": " there"}), chat_chunk({}, "stop"))])
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    events = await read_events(response)
    assert text_of(events) == "Hello there" and events[-1] == b"data: [DONE]"
    assert not any(b'"error"' in event for event in events)
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 1 and "2 malformed" in warnings[0].getMessage(), "logged once per stream, counted"
    await assert_nothing_left(gateway, upstream)
