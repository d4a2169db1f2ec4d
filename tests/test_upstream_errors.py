"""Provider failures as the client sees them: statuses, messages, headers, and no secret ever shown."""

from __future__ import annotations

import asyncio
import logging
import socket

import orjson
import pytest

from gateway.app import create_app
from gateway.config import parse_config
from tests.conftest import FAKE_KEY, gateway_yaml
from tests.fakes.upstream import HANG, RESET, Reply, chat_chunk, sse
from tests.helpers import BOUND, CHAT, JSON, ROLE, assert_openai_error, error_body, read_events

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize(
    ("upstream_status", "client_status", "code"),
    [
        (400, 400, "upstream_bad_request"),
        (404, 404, "upstream_not_found"),
        (422, 400, "upstream_bad_request"),
        (429, 429, "upstream_rate_limited"),
        (401, 502, "upstream_auth_failed"),
        (403, 502, "upstream_auth_failed"),
        (500, 502, "upstream_error"),
        (502, 502, "upstream_error"),
        (503, 502, "upstream_error"),
        (529, 502, "upstream_error"),
    ],
)
async def test_upstream_http_errors_map_to_openai_errors(upstream, gateway, upstream_status, client_status, code,
                                                         stream):
    upstream.queue(Reply(status=upstream_status, headers=JSON,
                         steps=[error_body(f"problem {upstream_status} with key {FAKE_KEY}")]))
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "stream": stream})
    assert response.status == client_status
    assert response.content_type == "application/json"
    text = await response.text()
    assert FAKE_KEY not in text and "GATEWAYSECRET" not in text
    error = assert_openai_error(orjson.loads(text))
    assert error["code"] == code
    assert "'up'" in error["message"]
    if client_status in (400, 404, 429):  # the provider's own words are kept when safe
        assert f"problem {upstream_status}" in error["message"]
    if upstream_status in (401, 403):
        assert "problem" not in error["message"]  # a refused key: nothing of the provider's text


async def test_429_passes_retry_after_and_rate_limit_headers(upstream, gateway):
    upstream.queue(Reply(status=429, steps=[error_body("Rate limit reached", "requests", "rate_limit_exceeded")],
                         headers={**JSON, "Retry-After": "7", "x-ratelimit-limit-requests": "500",
                                  "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "7s",
                                  "x-internal-secret": "nope"}))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert response.headers["x-ratelimit-limit-requests"] == "500"
    assert response.headers["x-ratelimit-reset-requests"] == "7s"
    assert "x-internal-secret" not in response.headers


async def test_error_text_with_key_shapes_is_redacted(upstream, gateway):
    leaked = "Incorrect API key provided: sk-proj-abcdefghijklmnop; also Bearer abc.def and AIzaSyA1234567890abcdefghijk"
    upstream.queue(Reply(status=400, headers=JSON, steps=[error_body(leaked)]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    message = (await response.json())["error"]["message"]
    for secret in ("sk-proj-abcdefghijklmnop", "abc.def", "AIzaSyA1234567890abcdefghijk"):
        assert secret not in message
    assert "[redacted]" in message


async def test_secrets_never_reach_the_logs(upstream, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.queue(Reply(status=401, headers=JSON, steps=[error_body(f"bad key {FAKE_KEY}")]))
    await gateway.post("/v2/chat/completions", json=CHAT)
    upstream.queue(Reply(steps=[sse(ROLE, b"not json", chat_chunk({}, "stop"))]))
    await read_events(await gateway.post("/v2/chat/completions", json=CHAT))
    assert caplog.records  # the gateway logs each request...
    assert FAKE_KEY not in caplog.text  # ...and never the key


async def test_non_json_error_body(upstream, gateway):
    upstream.queue(Reply(status=502, headers={"Content-Type": "text/html"}, steps=[b"<html>Bad gateway</html>"]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 502
    error = assert_openai_error(await response.json())
    assert "<html>" not in error["message"]


async def test_html_page_with_status_200_is_an_upstream_failure(upstream, gateway):
    upstream.queue(Reply(headers={"Content-Type": "text/html"}, steps=[b"<html><body>Login</body></html>"]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_bad_stream"


async def test_connection_refused_is_a_502(aiohttp_client):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = parse_config(gateway_yaml(f"http://127.0.0.1:{port}"), "t.yaml")
    client = await aiohttp_client(create_app(config))
    response = await client.post("/v2/chat/completions", json=CHAT)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unreachable"


async def test_reset_mid_stream_ends_with_error_event(upstream, gateway):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "partial"}), done=False), b'data: {"id":', RESET]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 200
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert b"partial" in events[1]
    error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_reset"
    assert events[-1] == b"data: [DONE]"


async def test_reset_before_headers_is_a_502(upstream, gateway):
    upstream.queue(Reply(before_headers=RESET))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 502
    assert (await response.json())["error"]["code"] in ("upstream_reset", "upstream_bad_stream")


async def test_oversized_event_ends_stream_instead_of_growing(upstream, make_gateway):
    gateway = await make_gateway()
    huge = b"data: {\"x\": \"" + b"a" * (2 << 20)  # one line over the 1 MiB default, never finished
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "ok"}), done=False), huge, HANG]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    events = await asyncio.wait_for(read_events(response), BOUND)
    error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
    assert error["code"] == "upstream_bad_stream"
    assert "1048576" in error["message"]
    await asyncio.wait_for(upstream.cut_off_event.wait(), 1.0)


async def test_error_event_before_content_keeps_http_status(upstream, gateway):
    upstream.queue(Reply(steps=[b"event: error\ndata: " + error_body("Overloaded", "server_error") + b"\n\n"]))
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert response.status == 502
    assert "Overloaded" in (await response.json())["error"]["message"]
