"""Streams end when the provider says they end: its end-of-stream event ends the answer at once, whether or
not it closes the connection; a connection that breaks under a body ends it at once too.

Gemini's stream has no end event: it ends at the event in which every candidate has its finishReason,
which in every recording also carries the final usageMetadata.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.app import create_app
from gateway.config import parse_config
from tests.conftest import gateway_yaml
from tests.fakes.upstream import HANG, RawUpstream, Reply, chat_chunk, chunked, raw_head, sse
from tests.helpers import ANTHROPIC_TEXT_REPLY, BOUND, ROLE, assert_nothing_left, assert_openai_error, read_events

RETRIES = "retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}\n    health: {max_failures: 0}"
TIMEOUTS = "{connect: 1, first_byte: 0.5, idle: 0.5, total: 30}"
USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}

OPENAI_ANSWER = sse(ROLE, chat_chunk({"content": "Hi"}), chat_chunk({}, "stop"), chat_chunk(choices=[], usage=USAGE))
GEMINI_ANSWER = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "H"}], "role": "model"}, "index": 0}], '
    b'"usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "responseId": "r1"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "i"}], "role": "model"}, "finishReason": "STOP", '
    b'"index": 0}], "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2, "totalTokenCount": 11}, '
    b'"responseId": "r1"}\r\n\r\n'
)
# model, a complete answer in the provider's wire format (its end-of-stream event last), the usage it reports
COMPLETE = {
    "openai": ("up/gpt-4o-mini", OPENAI_ANSWER, USAGE),
    "anthropic": ("ant/claude-x", ANTHROPIC_TEXT_REPLY, USAGE),
    "gemini": ("gem/gemini-2.5-flash", GEMINI_ANSWER, USAGE),
}


def counts(usage: dict) -> dict:
    return {key: usage[key] for key in USAGE}


@pytest.fixture
async def gateway(make_gateway):
    return await make_gateway(resilience=RETRIES, timeouts=TIMEOUTS)


def payloads(events: list[bytes]) -> list[dict]:
    return [orjson.loads(e[6:]) for e in events if e.startswith(b"data: {")]


@pytest.mark.parametrize("kind", list(COMPLETE))
async def test_end_of_stream_event_ends_a_stream_the_provider_holds_open(upstream, gateway, kind):
    model, answer, usage = COMPLETE[kind]
    upstream.default = Reply(steps=[answer, HANG])  # the whole answer, then the connection stays open
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}
    response = await gateway.post("/v2/chat/completions", json=body)
    assert response.status == 200
    events = await asyncio.wait_for(read_events(response), BOUND)
    chunks = payloads(events)
    assert not any("error" in chunk for chunk in chunks), chunks[-1]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "Hi"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and counts(chunks[-1]["usage"]) == usage
    assert events[-1] == b"data: [DONE]"
    assert len(upstream.received) == 1
    await assert_nothing_left(gateway, upstream)  # the held connection was closed


@pytest.mark.parametrize("kind", list(COMPLETE))
async def test_end_of_stream_event_ends_a_non_stream_answer_the_provider_holds_open(upstream, gateway, kind):
    model, answer, usage = COMPLETE[kind]
    upstream.default = Reply(steps=[answer, HANG])
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    response = await asyncio.wait_for(gateway.post("/v2/chat/completions", json=body), BOUND)
    assert response.status == 200, await response.text()
    completion = await response.json()
    assert completion["choices"][0]["message"]["content"] == "Hi"
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert counts(completion["usage"]) == usage
    assert len(upstream.received) == 1, "a complete answer is not asked for twice"
    await assert_nothing_left(gateway, upstream)


async def test_nothing_after_the_end_of_stream_event_is_read(upstream, gateway):
    late = sse(chat_chunk({"content": " late"}), chat_chunk({}, "length"), done=False)
    upstream.default = Reply(steps=[OPENAI_ANSWER + late, HANG])
    response = await gateway.post("/v2/chat/completions", json={"model": "up/gpt-4o-mini", "stream": True,
                                                                "messages": [{"role": "user", "content": "hi"}]})
    events = await asyncio.wait_for(read_events(response), BOUND)
    assert b"late" not in b"".join(events) and events[-1] == b"data: [DONE]"
    assert not any(b'"error"' in event for event in events)
    await assert_nothing_left(gateway, upstream)


# ---- broken chunked framing on a reused keep-alive connection ----

GOOD = [raw_head() + chunked(OPENAI_ANSWER) + b"0\r\n\r\n"]  # a whole reply: the connection goes to the pool
CONTENT = chunked(sse(ROLE, chat_chunk({"content": "Hel"}), done=False))
BAD_SIZE = b"zz\r\nnot a chunk\r\n"  # a chunk size line that is not hexadecimal
BROKEN = {
    "before content": ([raw_head(), BAD_SIZE], False),
    "after content": ([raw_head() + CONTENT, BAD_SIZE], True),
    # in one read with the content: the body's reader comes back to a connection aiohttp has closed
    "after content, same read": ([raw_head(), CONTENT + BAD_SIZE], True),
}


async def raw_gateway(aiohttp_client, raw: RawUpstream):
    config = parse_config(gateway_yaml(raw.url, timeouts="{connect: 2, first_byte: 30, idle: 30, total: 60}"))
    return await aiohttp_client(create_app(config))


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("name", list(BROKEN))
async def test_broken_chunk_framing_on_a_reused_connection_ends_at_once(aiohttp_client, name, stream):
    script, content_sent = BROKEN[name]
    async with RawUpstream(GOOD, script) as raw:
        gateway = await raw_gateway(aiohttp_client, raw)
        body = {"model": "up/gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
        first = await gateway.post("/v2/chat/completions", json=body)
        assert first.status == 200
        await first.read()
        async with asyncio.timeout(BOUND):  # the timeouts are 30 s: only an at-once end passes
            response = await gateway.post("/v2/chat/completions", json=body)
            if stream and content_sent:
                assert response.status == 200
                events = await read_events(response)
                assert b"Hel" in b"".join(events) and events[-1] == b"data: [DONE]"
                error = orjson.loads(events[-2][6:])["error"]
            else:
                assert response.status == 502
                error = assert_openai_error(await response.json())
        assert error["code"] == "upstream_bad_stream", error
        assert "framing" in error["message"]
        assert raw.requests == [1, 2], "the broken reply came on the reused connection"


async def test_broken_chunk_framing_in_an_error_body_ends_at_once(aiohttp_client):
    async with RawUpstream(GOOD, [raw_head(500, "application/json"), BAD_SIZE]) as raw:
        gateway = await raw_gateway(aiohttp_client, raw)
        body = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        await (await gateway.post("/v2/chat/completions", json=body)).read()
        async with asyncio.timeout(BOUND):
            response = await gateway.post("/v2/chat/completions", json=body)
            error = assert_openai_error(await response.json())
        assert response.status == 502 and error["code"] == "upstream_error"
        assert "HTTP 500" in error["message"]


async def test_error_body_split_across_reads_keeps_its_message(aiohttp_client):
    message = b'{"error": {"message": "model overloaded, try later", "type": "server_error"}}'
    split = [raw_head(503, "application/json") + chunked(message[:20]), chunked(message[20:]) + b"0\r\n\r\n"]
    async with RawUpstream(split) as raw:
        gateway = await raw_gateway(aiohttp_client, raw)
        response = await gateway.post("/v2/chat/completions", json={"model": "up/gpt-4o-mini",
                                                                    "messages": [{"role": "user", "content": "hi"}]})
        assert "model overloaded, try later" in assert_openai_error(await response.json())["message"]
