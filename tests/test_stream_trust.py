"""What a provider's stream can not do to the gateway: send it elsewhere with a redirect, pass bad bytes off
as an empty success, keep a stream open forever with comments alone, or set a cookie that goes out with
another client's request."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse_config
from gateway.sse import SSEDecoder
from gateway.upstream import event_json
from tests.conftest import gateway_yaml
from tests.fakes.upstream import FakeUpstream, Reply, Sleep, chat_chunk, sse
from tests.helpers import BOUND, CHAT, JSON, ROLE, assert_nothing_left, assert_openai_error, read_events, text_of

RETRIES = "retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}\n    health: {max_failures: 0}"


@pytest.fixture
async def elsewhere(aiohttp_server):
    """A second host on loopback that nothing may reach."""
    fake = FakeUpstream()
    fake.default = Reply(status=200, headers=JSON, steps=[b'{"results": [{"flagged": false}]}'])
    fake.app.router.add_get("/{tail:.*}", fake._handle)  # a 301, 302 or 303 is followed with a GET
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


# ---- redirects are not followed ----

@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("status", [301, 302, 307, 308])
@pytest.mark.parametrize("model", ["up/gpt-4o-mini", "ant/claude-x", "gem/gemini-2.5-flash"])
async def test_a_provider_redirect_is_not_followed(upstream, make_gateway, elsewhere, status, stream, model):
    gateway = await make_gateway(resilience=RETRIES)
    upstream.default = Reply(status=status, headers={"Location": f"{elsewhere.url}/steal?token=s3cr3t-query"})
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": model, "stream": stream})
    assert response.status == 502
    error = assert_openai_error(await response.json())
    assert error["code"] == "upstream_redirect"
    assert f"HTTP {status}" in error["message"] and "s3cr3t-query" not in error["message"]
    assert elsewhere.received == [], "the prompt and the key went to the redirect's host"
    assert len(upstream.received) == 1, "a redirect is a configuration problem: not retried"
    await assert_nothing_left(gateway, upstream)


@pytest.mark.parametrize("status", [302, 307])
async def test_a_moderation_service_redirect_is_not_followed(upstream, make_gateway, elsewhere, status):
    upstream.queue(Reply(status=status, headers={"Location": f"{elsewhere.url}/v1/moderations"}))
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "ok"}), chat_chunk({}, "stop"))]))
    gateway = await make_gateway(extra=f"moderation:\n  service: {{url: {upstream.url}/v1/moderations, "
                                       "on_error: allow}\n")
    response = await gateway.post("/v2/chat/completions", json=CHAT)
    assert text_of(await read_events(response)) == "ok"
    assert upstream.received[0].path == "/v1/moderations" and upstream.received[0].body == {"input": "hi"}
    assert elsewhere.received == [], "the text went to the redirect's host"


# ---- text that is not UTF-8 ----

BAD_TEXT = b"caf\xe9 ok"  # latin-1, not UTF-8
OPENAI_BAD = sse(ROLE, b'{"choices":[{"index":0,"delta":{"content":"' + BAD_TEXT + b'"},"finish_reason":null}]}',
                 chat_chunk({}, "stop"))
ANTHROPIC_BAD = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-x",'
    b'"usage":{"input_tokens":3}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
    b'"text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"' + BAD_TEXT + b'"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":2}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
GEMINI_BAD = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "' + BAD_TEXT + b'"}], "role": "model"}, '
    b'"finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 3}}\r\n\r\n'
)
NOT_UTF8 = {"up/gpt-4o-mini": OPENAI_BAD, "ant/claude-x": ANTHROPIC_BAD, "gem/gemini-2.5-flash": GEMINI_BAD}


@pytest.mark.parametrize("model", list(NOT_UTF8))
async def test_an_event_that_is_not_utf8_is_not_a_silent_empty_success(upstream, make_gateway, model, caplog):
    gateway = await make_gateway()
    upstream.default = Reply(steps=[NOT_UTF8[model]])
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": model, "stream": False})
    assert response.status == 200
    answer = await response.json()
    assert answer["choices"][0]["message"]["content"] == "caf\ufffd ok", "the text is kept, its bad byte marked"
    assert any("1 malformed" in r.getMessage() for r in caplog.records), "and the event is counted as malformed"


@pytest.mark.parametrize("model", list(NOT_UTF8))
async def test_an_event_that_is_not_utf8_fails_the_try_with_on_malformed_error(upstream, make_gateway, model):
    gateway = await make_gateway(resilience="retry: {attempts: 1}\n    health: {max_failures: 0}\n    "
                                            "on_malformed: error")
    upstream.default = Reply(steps=[NOT_UTF8[model]])
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "model": model, "stream": False})
    assert response.status == 502
    assert assert_openai_error(await response.json())["code"] == "upstream_malformed"


# ---- comments keep the connection alive, not the stream: timeouts.max_silence ----

PINGS = [step for _ in range(400) for step in (b": ping\n\n", Sleep(0.05))]  # 20 s of comments, no event


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_a_provider_sending_only_comments_ends_at_max_silence(upstream, make_gateway, stream):
    gateway = await make_gateway(resilience=RETRIES, timeouts="{first_byte: 0.5, idle: 0.5, max_silence: 1}")
    upstream.default = Reply(steps=PINGS)
    async with asyncio.timeout(BOUND):
        response = await gateway.post("/v2/chat/completions", json={**CHAT, "stream": stream})
        assert response.status == 504
        error = assert_openai_error(await response.json())
    assert error["code"] == "upstream_silence_timeout" and "max_silence" in error["message"]
    assert len(upstream.received) == 2, "retried like any timeout before content"
    await assert_nothing_left(gateway, upstream)


async def test_comments_after_content_end_the_stream_at_max_silence(upstream, make_gateway):
    gateway = await make_gateway(timeouts="{first_byte: 0.5, idle: 0.5, max_silence: 1}")
    upstream.default = Reply(steps=[sse(ROLE, chat_chunk({"content": "Hel"}), done=False), *PINGS])
    async with asyncio.timeout(BOUND):
        events = await read_events(await gateway.post("/v2/chat/completions", json=CHAT))
    assert text_of(events) == "Hel"
    assert orjson.loads(events[-2][6:])["error"]["code"] == "upstream_silence_timeout"
    await assert_nothing_left(gateway, upstream)


async def test_comments_count_as_activity_for_idle(upstream, make_gateway):
    """`idle` is about the connection: comments (every 0.05 s here) keep it from expiring; events come
    well within max_silence."""
    gateway = await make_gateway(timeouts="{first_byte: 0.5, idle: 0.5, max_silence: 5}")
    pings = [step for _ in range(20) for step in (b": ping\n\n", Sleep(0.05))]  # 1 s: twice the idle timeout
    upstream.default = Reply(steps=[sse(ROLE, done=False), *pings, sse(chat_chunk({"content": "ok"}),
                                                                        chat_chunk({}, "stop"))])
    events = await read_events(await gateway.post("/v2/chat/completions", json=CHAT))
    assert text_of(events) == "ok" and events[-1] == b"data: [DONE]"


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_max_silence_is_validated(value):
    text = gateway_yaml("http://127.0.0.1:1", timeouts=f"{{max_silence: {orjson.dumps(value).decode()}}}")
    with pytest.raises(ConfigError) as raised:
        parse_config(text)
    assert "providers[0].timeouts.max_silence" in str(raised.value)


def test_max_silence_default_and_value():
    config = parse_config(gateway_yaml("http://127.0.0.1:1", timeouts="{max_silence: 42}"))
    assert config.providers["up"].timeouts.max_silence == 42
    assert parse_config(gateway_yaml("http://127.0.0.1:1")).providers["up"].timeouts.max_silence == 300


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.text(), st.binary(max_size=6).map(lambda junk: bytes(b | 0x80 for b in junk)))
def test_event_json_keeps_text_that_is_not_utf8_and_counts_it(text, junk):
    """Bytes of 0x80 and up are never JSON syntax: whatever they are, the object and its text survive."""
    state = SimpleNamespace(malformed=0)
    raw = b'{"t": "' + orjson.dumps(text)[1:-1] + junk + b'"}'
    payload = event_json(raw, state)
    assert payload == {"t": text + junk.decode("utf-8", "replace")}
    assert state.malformed == (0 if _is_utf8(junk) else 1)


LINE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE_TEXT, min_size=1, max_size=5), st.data())
def test_a_leading_bom_is_dropped_however_the_stream_is_split(texts, data):
    stream = b"\xef\xbb\xbf" + b"".join(b"data: " + text.encode() + b"\n\n" for text in texts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = SSEDecoder()
    events = [event for a, b in zip([0, *cuts], [*cuts, len(stream)]) for event in decoder.feed(stream[a:b])]
    assert [event.data for event in events] == [text.encode() for text in texts]


# ---- no cookies between clients ----

async def test_a_cookie_a_provider_sets_is_not_sent_with_the_next_clients_request(upstream, make_gateway):
    upstream.url = upstream.url.replace("127.0.0.1", "localhost")  # a host name: a cookie jar keeps its cookies
    answer = sse(ROLE, chat_chunk({"content": "hi"}), chat_chunk({}, "stop"))
    upstream.queue(Reply(steps=[answer], headers={"Content-Type": "text/event-stream",
                                                  "Set-Cookie": "__cf_bm=one-clients-session; Path=/"}),
                   Reply(steps=[answer]))
    gateway = await make_gateway()
    for _ in range(2):
        response = await gateway.post("/v1/chat/completions", json=CHAT)
        assert text_of(await read_events(response)) == "hi"
    assert [r.headers.get("Cookie") for r in upstream.received] == [None, None]
