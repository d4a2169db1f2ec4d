"""The HTTP boundary, over raw sockets against a served gateway: compressed bodies inflated by the gateway,
capped, and only once the key is known; slow clients cut off by server.request_timeout; malformed
requests answered in OpenAI's error shape and logged in one line without their bytes; client text
escaped in log lines; the request log line's own id; a failing non-stream request counted as such."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import re
import select
import signal
import socket
import time
import zlib

import orjson
import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import ConfigError, parse_config
from tests.fakes.upstream import chat_chunk, sse
from tests.serving import served
from tests.helpers import BOUND, BOUNDARY_KEY, connect, exchange, free_port, post, read_response

KEYS = f"""
keys:
  - id: team
    sha256: {hashlib.sha256(BOUNDARY_KEY.encode()).hexdigest()}
"""
CHAT = {"model": "demo/echo", "messages": [{"role": "user", "content": "hello boundary"}]}
RAW_CHAT = orjson.dumps(CHAT)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def openai_error(status: int, headers: dict[str, str], body: bytes) -> dict:
    assert headers["content-type"].startswith("application/json"), (status, body)
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def gzip_bomb(inflated_mb: int) -> bytes:
    """A gzip member of `inflated_mb` MiB of zeros, about a thousandth of that on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(inflated_mb)) + compressor.flush()


@pytest.fixture
async def keyed(make_gateway):
    return await make_gateway(extra=KEYS, max_body_bytes=1 << 20)


# ---------------------------------------------------------------------------------------------- compressed bodies

async def test_gzip_bomb_is_a_413_once_the_limit_is_inflated(keyed):
    bomb = gzip_bomb(128)  # 128 MiB inflated, an eighth of a MiB on the wire: well under the 1 MiB limit
    assert len(bomb) < 1 << 18
    bombs = [exchange(keyed.server.port, post(bomb, "Content-Encoding: gzip")) for _ in range(3)]
    for status, headers, body in await asyncio.gather(*bombs):
        assert status == 413
        error = openai_error(status, headers, body)
        assert error["code"] == "request_too_large"
        assert "inflated" in error["message"]
    assert (await keyed.get("/healthz")).status == 200


async def test_compressed_body_is_not_inflated_before_the_key_is_checked(keyed, caplog):
    """A body that is not gzip at all, refused for its missing key: nothing inflates it, neither before
    the 401 nor while the rest is drained, so the connection serves its next request. (aiohttp's own
    inflation ran on it as it arrived, failed, and logged a traceback and dropped the connection.)"""
    caplog.set_level(logging.INFO)
    reader, writer = await connect(keyed.server.port)
    try:
        writer.write(post(b"\x1f\x8b\x08\x00 not gzip " * 500, "Content-Encoding: gzip", key=None))
        status, headers, body = await read_response(reader)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        next_status, _, _ = await read_response(reader)
    finally:
        writer.close()
    assert status == 401
    assert openai_error(status, headers, body)["code"] == "missing_api_key"
    assert next_status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_401_is_sent_before_the_body_arrives(keyed):
    reader, writer = await connect(keyed.server.port)
    try:  # a megabyte announced, none of it sent: the answer cannot depend on it
        writer.write(post(b"", "Content-Encoding: gzip", length=1 << 20, key="gwk-wrong-key-0000000000000000"))
        status, headers, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 401
    assert openai_error(status, headers, body)["code"] == "invalid_api_key"


async def test_expect_100_continue_is_answered_only_after_the_key_is_checked(keyed):
    for key, first in (("gwk-wrong-key-0000000000000000", 401), (BOUNDARY_KEY, 100)):
        reader, writer = await connect(keyed.server.port)
        try:  # the headers alone, as a client that waits for "100 Continue" before its body sends them
            writer.write(post(b"", "Expect: 100-continue", length=len(RAW_CHAT), key=key))
            status_line = await asyncio.wait_for(reader.readline(), BOUND)
            assert status_line.split()[1] == str(first).encode(), status_line
            if first == 100:
                assert await reader.readline() == b"\r\n"
                writer.write(RAW_CHAT)
                status, headers, body = await read_response(reader)
                assert status == 200 and orjson.loads(body)["choices"][0]["message"]["content"]
        finally:
            writer.close()


async def test_an_unknown_expectation_is_a_417_in_openai_shape(keyed):
    status, headers, body = await exchange(keyed.server.port, post(RAW_CHAT, "Expect: something-else"))
    assert status == 417 and openai_error(status, headers, body)["code"] == "expectation_failed"


def _deflate(data: bytes, wbits: int) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("coding, body", [
    ("gzip", gzip.compress(RAW_CHAT)),
    ("x-gzip", gzip.compress(RAW_CHAT)),
    ("GZip", gzip.compress(RAW_CHAT[:20]) + gzip.compress(RAW_CHAT[20:])),  # two gzip members
    ("deflate", _deflate(RAW_CHAT, zlib.MAX_WBITS)),  # zlib-wrapped, as RFC 9110 means it
    ("deflate", _deflate(RAW_CHAT, -zlib.MAX_WBITS)),  # raw deflate, as many clients send it
    ("identity", RAW_CHAT),
])
async def test_honest_compressed_bodies_are_served(keyed, coding, body):
    status, _, answer = await exchange(keyed.server.port, post(body, f"Content-Encoding: {coding}"))
    assert status == 200, answer
    assert "hello boundary" in orjson.loads(answer)["choices"][0]["message"]["content"]


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, deflate", "gzip, gzip"])
async def test_unknown_content_encoding_is_a_415(keyed, coding):
    raw = post(gzip.compress(RAW_CHAT), f"Content-Encoding: {coding}")
    status, headers, body = await exchange(keyed.server.port, raw)
    assert status == 415
    error = openai_error(status, headers, body)
    assert error["code"] == "unsupported_content_encoding"
    assert "gzip or deflate" in error["message"]


@pytest.mark.parametrize("coding, body", [
    ("gzip", gzip.compress(RAW_CHAT)[:-12]),  # truncated
    ("gzip", b"\x1f\x8b\x08\x00 not gzip at all"),
    ("deflate", _deflate(RAW_CHAT, zlib.MAX_WBITS) + b"trailing"),
    ("deflate", b"\x78"),
])
async def test_corrupt_or_truncated_compressed_body_is_a_400(keyed, coding, body):
    status, headers, answer = await exchange(keyed.server.port, post(body, f"Content-Encoding: {coding}"))
    assert status == 400
    assert openai_error(status, headers, answer)["code"] == "invalid_body"


def test_inflater_stops_at_the_limit_of_a_gigabyte_bomb():
    from gateway.body import Inflater
    from gateway.errors import GatewayError

    limit = 1 << 20
    inflater = Inflater("gzip", limit)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with pytest.raises(GatewayError) as refused:
        for _ in range(1024):  # a GiB of zeros, fed as it compresses
            inflater.feed(compressor.compress(zeros))
        inflater.feed(compressor.flush())
    assert refused.value.status == 413
    assert inflater.size <= limit + 1  # never more than one byte past the limit was inflated


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=3000), wbits=st.sampled_from([31, zlib.MAX_WBITS, -zlib.MAX_WBITS]),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6), limit=st.integers(1, 3500))
def test_inflater_round_trips_bodies_split_anywhere(data, wbits, cuts, limit):
    from gateway.body import Inflater
    from gateway.errors import GatewayError

    wire = _deflate(data, wbits)
    inflater = Inflater("gzip" if wbits == 31 else "deflate", limit)
    edges = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    try:
        for start, end in zip(edges, edges[1:]):
            inflater.feed(wire[start:end])
        inflated = inflater.finish()
    except GatewayError as error:
        assert error.status == 413 and len(data) > limit
        assert inflater.size <= limit + 1
    else:
        assert len(data) <= limit
        assert inflated == data


# ---------------------------------------------------------------------------------------------- slow clients

async def test_client_sending_half_its_body_gets_a_408(make_gateway):
    gateway = await make_gateway(extra=KEYS, request_timeout=0.5)
    reader, writer = await connect(gateway.server.port)
    try:
        writer.write(post(RAW_CHAT[:len(RAW_CHAT) // 2], length=len(RAW_CHAT)))
        status, headers, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 408
    error = openai_error(status, headers, body)
    assert error["code"] == "request_timeout"
    assert "request_timeout" in error["message"]


async def test_many_half_body_clients_are_all_cut_off(make_gateway):
    gateway = await make_gateway(extra=KEYS, request_timeout=0.5)
    connections = [await connect(gateway.server.port) for _ in range(50)]
    try:
        for _, writer in connections:
            writer.write(post(RAW_CHAT[:10], length=len(RAW_CHAT)))
        answers = await asyncio.gather(*(read_response(reader) for reader, _ in connections))
    finally:
        for _, writer in connections:
            writer.close()
    assert [status for status, _, _ in answers] == [408] * 50
    assert (await gateway.get("/healthz")).status == 200


async def _trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
    for i in range(len(data)):
        writer.write(data[i:i + 1])
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("after_a_request", [False, True], ids=["first-request", "next-request"])
async def test_slowloris_headers_are_cut_off_with_a_408(make_gateway, after_a_request):
    gateway = await make_gateway(request_timeout=0.5)
    reader, writer = await connect(gateway.server.port)
    if after_a_request:  # the bound holds for every request of a keep-alive connection, not only its first
        writer.write(post(RAW_CHAT, key=None))
        assert (await read_response(reader))[0] == 200
    trickle = asyncio.ensure_future(_trickle(writer, b"POST /v1/chat/completions HTTP/1.1\r\n" + b"X-Slow: a\r\n" * 500))
    try:
        status, headers, body = await read_response(reader)
        async with asyncio.timeout(BOUND):
            assert await reader.read() == b""  # and the connection is closed
    finally:
        trickle.cancel()
        writer.close()
    assert status == 408
    assert openai_error(status, headers, body)["code"] == "request_timeout"


async def test_headers_that_never_complete_get_an_access_line_and_are_counted(make_gateway, caplog):
    """Every request gets one line, the one that never became a request too: what is known of it (the peer,
    the 408, the outcome) and the gateway's own id, which the 408 returns."""
    caplog.set_level(logging.INFO)
    gateway = await make_gateway(request_timeout=0.5)
    reader, writer = await connect(gateway.server.port)
    headers_never_complete = b"POST /v1/chat/completions HTTP/1.1\r\n" + b"X-Slow: a\r\n" * 500
    trickle = asyncio.ensure_future(_trickle(writer, headers_never_complete))
    try:
        status, headers, _ = await read_response(reader)
    finally:
        trickle.cancel()
        writer.close()
    assert status == 408
    lines = [record for record in caplog.records if record.name == "gateway.access"]
    assert len(lines) == 1
    fields = lines[0].access_fields()
    assert {name: fields[name] for name in ("status", "outcome", "client", "endpoint", "method", "path", "key")} == {
        "status": 408, "outcome": "request_timeout", "client": "127.0.0.1", "endpoint": "-", "method": "-",
        "path": "-", "key": None}
    assert fields["request_id"] == fields["id"] == headers["x-request-id"]
    assert "outcome=request_timeout status=408" in lines[0].getMessage()
    scrape = await (await gateway.get("/metrics")).text()
    counted = {tuple(sorted(sample.labels.items())): sample.value for family in text_string_to_metric_families(scrape)
               for sample in family.samples if sample.name == "gateway_requests_total"}
    assert counted[(("endpoint", "-"), ("model", "-"), ("outcome", "request_timeout"), ("provider", "-"),
                    ("status", "408"))] == 1


async def test_idle_keep_alive_connection_is_not_cut_by_request_timeout(make_gateway):
    """request_timeout bounds headers once they begin, not the wait between two requests."""
    gateway = await make_gateway(request_timeout=0.3)
    reader, writer = await connect(gateway.server.port)
    try:
        for _ in range(2):
            writer.write(post(RAW_CHAT, key=None))
            status, _, _ = await read_response(reader)
            assert status == 200
            await asyncio.sleep(1.0)  # idle for over three times request_timeout
    finally:
        writer.close()


# ---------------------------------------------------------------------------------------------- malformed requests

async def test_bad_byte_in_authorization_line_keeps_the_key_out_of_logs_and_answer(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    raw = f"GET /v1/models HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {BOUNDARY_KEY}\x01\r\n\r\n".encode()
    status, headers, body = await exchange(keyed.server.port, raw)
    assert status == 400
    error = openai_error(status, headers, body)
    assert error["code"] == "malformed_request"
    assert BOUNDARY_KEY not in body.decode() and "SECRET" not in body.decode()
    assert BOUNDARY_KEY not in caplog.text and "SECRET" not in caplog.text
    assert "Traceback" not in caplog.text
    records = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(records) == 1
    assert records[0].exc_info is None and "\n" not in records[0].getMessage()


@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\r\nHo st: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Esc: \x1b[31mred\r\n\r\n",
], ids=["header-token", "line-too-long", "content-length", "chunk-size", "escape-in-header"])
async def test_malformed_requests_get_openai_errors_and_one_log_line(gateway, caplog, raw):
    caplog.set_level(logging.DEBUG)
    status, headers, body = await exchange(gateway.server.port, raw)
    assert status == 400
    assert openai_error(status, headers, body)["code"] == "malformed_request"
    assert "Traceback" not in caplog.text
    lines = [r.getMessage() for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert len(lines) == 1
    assert not CONTROL.search(lines[0]) and len(lines[0]) < 200
    assert b"aaaa" not in body and b"aaaa" not in lines[0].encode()  # none of the request's bytes
    access = [r.access_fields() for r in caplog.records if r.name == "gateway.access"]  # and its access line
    assert [(line["status"], line["outcome"], line["path"], line["request_id"]) for line in access] == [
        (400, "malformed_request", "-", headers["x-request-id"])]


async def test_non_http_traffic_gets_its_access_line_at_debug(gateway, caplog):
    caplog.set_level(logging.DEBUG)
    status, _, _ = await exchange(gateway.server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n")
    assert status == 400  # a TLS hello on the plain port
    access = [r for r in caplog.records if r.name == "gateway.access"]
    assert [(r.levelno, r.access_fields()["outcome"]) for r in access] == [(logging.DEBUG, "malformed_request")]


async def test_gateway_serve_applies_the_same_boundary(tmp_path):
    """The child process, not only the test server: slow headers cut off, a malformed request answered
    in JSON with nothing of it in stderr, a compressed body inflated."""
    port = free_port()
    config = (f"server: {{host: 127.0.0.1, port: {port}, request_timeout: 0.5}}\n"
              "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0}\n" + KEYS)

    async with served(config, port, tmp_path) as (gateway, log):
        reader, writer = await connect(port)
        trickle = asyncio.ensure_future(_trickle(writer, b"POST /v1/chat/completions HTTP/1.1\r\n" + b"X: y\r\n" * 500))
        try:
            slow = await read_response(reader)
        finally:
            trickle.cancel()
            writer.close()
        bad = await exchange(port, f"GET /v1/models HTTP/1.1\r\nAuthorization: Bearer {BOUNDARY_KEY}\x01\r\n\r\n".encode())
        inflated = await exchange(port, post(gzip.compress(RAW_CHAT), "Content-Encoding: gzip"))
        gateway.terminate()
        assert gateway.wait(BOUND) == 0
    assert slow[0] == 408 and openai_error(*slow)["code"] == "request_timeout"
    assert bad[0] == 400 and openai_error(*bad)["code"] == "malformed_request"
    assert inflated[0] == 200
    text = log.read_text()
    assert "SECRET" not in text and "Traceback" not in text
    assert "malformed HTTP request from 127.0.0.1: Invalid header value char" in text


# ---------------------------------------------------------------------------------------------- log lines

@pytest.mark.parametrize("model", [
    "m\nINFO gateway: request fake-id chat key=admin outcome=ok",
    "m\rwiped", "m\x1b[2J\x1b[31mred", "m\x00nul", "m\x85next\u2028line", "m\\x0a",
])
async def test_model_name_with_control_characters_never_reaches_a_log_line_raw(upstream, gateway, caplog, model):
    caplog.set_level(logging.DEBUG)
    upstream.stream(sse(chat_chunk({"role": "assistant", "content": "hi"}), chat_chunk({}, "stop")))
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": f"up/{model}"})
    if CONTROL.search(model):  # refused before routing (validation); the log lines hold anyway
        assert response.status == 400 and (await response.json())["error"]["param"] == "model"
    for record in caplog.records:
        if record.name.startswith("gateway"):
            assert not CONTROL.search(record.getMessage()), record.getMessage()
    assert "fake-id chat key=admin" not in "".join(r.getMessage().split("\\n")[0] for r in caplog.records)


async def test_huge_model_name_never_makes_a_huge_log_line(upstream, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "up/" + "m" * 60000})
    assert response.status == 400 and (await response.json())["error"]["param"] == "model"
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)



async def test_log_line_carries_the_gateway_s_own_id_beside_the_client_s(gateway, caplog):
    caplog.set_level(logging.INFO)
    for _ in range(2):
        response = await gateway.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "client-id-7"})
        assert response.headers["x-request-id"] == "client-id-7"  # the client's id is kept
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request id=")]
    assert len(lines) == 2
    own = [re.search(r"\bid=([0-9a-f]{32}) request_id=client-id-7 ", line).group(1) for line in lines]
    assert own[0] != own[1]


def test_escape_makes_one_bounded_line():
    from gateway.logfmt import escape

    assert escape("a\nb\rc\td\\e") == "a\\nb\\rc\\td\\\\e"
    assert escape("\x1b[31m\x00\x7f\x85\u2028\u202e") == "\\x1b[31m\\x00\\x7f\\x85\\u2028\\u202e"
    assert escape("plain model-name/v1.2 ü 漢") == "plain model-name/v1.2 ü 漢"
    assert escape("x" * 1000, 10) == "x" * 10 + "...[+990 chars]"


@given(st.text())
def test_escape_never_lets_a_control_character_through(text):
    from gateway.logfmt import escape

    out = escape(text, 50)
    assert not CONTROL.search(out)
    assert len(out.splitlines() or [""]) == 1
    assert len(out) <= 50 * 6 + 30


# ---------------------------------------------------------------------------------------------- failures

async def test_non_stream_request_failing_inside_the_gateway_is_internal_error_not_cancelled(upstream, gateway,
                                                                                             caplog):
    caplog.set_level(logging.INFO)
    upstream.stream(sse({"id": "x", "choices": ["not a choice"]}))  # trips the combiner: a bug, not a GatewayError
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "up/m"})
    assert response.status == 500
    assert (await response.json())["error"]["code"] == "internal_error"
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("request id="))
    assert "outcome=internal_error" in line
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.ERROR)  # the traceback, server-side
    metrics = await (await gateway.get("/metrics")).text()
    assert 'outcome="internal_error"} 1.0' in metrics and 'outcome="cancelled"' not in metrics


# ---------------------------------------------------------------------------------------------- config

def test_request_timeout_has_a_default_and_is_validated():
    base = "providers:\n  - {name: demo, kind: demo, models: [echo]}\n"
    assert parse_config(base).server.request_timeout == 30.0
    assert parse_config("server: {request_timeout: 2.5}\n" + base).server.request_timeout == 2.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError) as problems:
            parse_config(f"server: {{request_timeout: {bad}}}\n" + base)
        assert any("server.request_timeout" in str(p) for p in problems.value.problems)


def test_serving_moves_start_up_objects_out_of_the_collectors_sight():
    """`gateway serve` calls settle_heap once listening: the collector no longer walks start-up's objects
    on every full collection, and runs every GC_THRESHOLDS[0] allocations instead of 700."""
    import gc

    from gateway.server import GC_THRESHOLDS, settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 10_000  # the modules, the config, the app...
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# ------------------------------------------------------------------------------------ connection storms

def _all_connect(port: int, count: int, bound: float) -> int:
    """Opens `count` connections to `port` at once; how many the kernel completed within `bound` seconds.
    A connection beyond a full accept queue has its SYN dropped and waits for the retry (1, 3, 7 s)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        poller = select.poll()
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            poller.register(sock, select.POLLOUT)
        waiting = {sock.fileno() for sock in sockets}
        end = time.monotonic() + bound
        while waiting and time.monotonic() < end:
            for fd, _ in poller.poll(100):
                waiting.discard(fd)
                poller.unregister(fd)
        return count - len(waiting)
    finally:
        for sock in sockets:
            sock.close()


async def test_a_connection_storm_waits_in_the_accept_queue_instead_of_being_dropped(tmp_path):
    """With its loop busy (here: stopped), `gateway serve` lets the kernel queue far more than aiohttp's
    default 128 connections: a storm's clients are accepted late, not retried seconds later."""
    port = free_port()
    config = f"server: {{host: 127.0.0.1, port: {port}}}\nproviders:\n  - {{name: demo, kind: demo, models: [echo]}}\n"
    with open("/proc/sys/net/core/somaxconn") as f:
        count = min(600, int(f.read()) - 8)  # the kernel caps any backlog at somaxconn
    async with served(config, port, tmp_path) as (gateway, _):
        gateway.send_signal(signal.SIGSTOP)
        try:
            connected = await asyncio.to_thread(_all_connect, port, count, BOUND / 2)
        finally:
            gateway.send_signal(signal.SIGCONT)
        assert connected == count
        assert (await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 200
