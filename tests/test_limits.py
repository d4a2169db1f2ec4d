"""Per-key limits with the in-memory backend, over real sockets: 429s with OpenAI's headers, token
estimates corrected by real usage, and a stream slot given back on every way a stream can end."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ClientKey, KeyLimits
from gateway.context import RequestContext
from gateway.appkeys import CONFIG
from gateway.appkeys import LIVE
from gateway.limits import MemoryLimits
from gateway.metrics import Metrics
from gateway.pipeline import Chain
from gateway.pipeline.ratelimit import DEFAULT_COMPLETION_TOKENS, estimate_tokens, used_tokens
from tests.fakes.upstream import HANG, RESET, Reply, Wait, chat_chunk, sse
from tests.helpers import bearer, digest

BOUND = 10
RATED = "gwk-rated-0123456789abcdef"
TOKENS = "gwk-tokens-0123456789abcdef"
SOLO = "gwk-solo-0123456789abcdef"


KEYS = f"""
keys:
  - id: rated
    sha256: {digest(RATED)}
    limits: {{requests_per_minute: 2, tokens_per_minute: 100000}}
  - id: tokens
    sha256: {digest(TOKENS)}
    limits: {{tokens_per_minute: 1000}}
  - id: solo
    sha256: {digest(SOLO)}
    limits: {{concurrent_streams: 1}}
"""
CHAT = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}  # 6 characters: 2 tokens
STREAM = {**CHAT, "stream": True}
ROLE = chat_chunk({"role": "assistant", "content": ""})


def usage(total: int) -> dict:
    return chat_chunk(choices=[], usage={"prompt_tokens": 2, "completion_tokens": total - 2, "total_tokens": total})


def answer(upstream, total: int = 7) -> None:
    upstream.stream(sse(ROLE, chat_chunk({"content": "Hi"}), chat_chunk({}, "stop"), usage(total)))


@pytest.fixture
async def limited(make_gateway):
    """A gateway with limited keys whose clock stands still, so that every budget figure is exact."""
    gateway = await make_gateway(extra=KEYS)
    gateway.server.app[LIVE].current.limiter.clock = lambda: 1000.0
    return gateway


def limiter(gateway) -> MemoryLimits:
    return gateway.server.app[LIVE].current.limiter


async def released(gateway, key_id: str = "solo") -> None:
    async with asyncio.timeout(BOUND):
        while limiter(gateway).open_streams(key_id):
            await asyncio.sleep(0.01)


async def read_all(response) -> list[bytes]:
    raw = await asyncio.wait_for(response.read(), BOUND)
    return [event for event in raw.split(b"\n\n") if event]


# ---------------------------------------------------------------------------------------------- requests and tokens

async def test_requests_per_minute_429_with_openai_headers(limited, upstream):
    for remaining in ("1", "0"):
        answer(upstream)
        response = await limited.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))
        assert response.status == 200
        assert response.headers["x-ratelimit-limit-requests"] == "2"
        assert response.headers["x-ratelimit-remaining-requests"] == remaining
        assert response.headers["x-ratelimit-limit-tokens"] == "100000"
    response = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(RATED))
    assert response.status == 429
    assert response.headers["Retry-After"] == "30"  # one request refills in 60 s / 2
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert response.headers["x-ratelimit-limit-tokens"] == "100000"
    assert response.headers["x-ratelimit-remaining-tokens"] == "99986"  # two answers of 7 tokens each
    assert response.headers["x-ratelimit-reset-tokens"] == "9ms"
    error = (await response.json())["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests_per_minute"
    assert "requests_per_minute" in error["message"] and "'rated'" in error["message"]
    assert len(upstream.received) == 2  # the refused request never reached the provider
    metrics = await (await limited.get("/metrics")).text()
    assert 'gateway_rate_limited_total{key="rated",limit="requests_per_minute"} 1.0' in metrics
    assert 'gateway_key_requests_total{key="rated",outcome="rate_limit_exceeded"} 1.0' in metrics


async def test_tokens_are_estimated_then_corrected_by_real_usage(limited, upstream):
    # estimate: 2 prompt tokens + max_tokens; each answer really used 50 tokens
    answer(upstream, 50)
    response = await limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 600}, headers=bearer(TOKENS))
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-tokens"] == "398"  # 1000 - 602 charged on admission
    assert "x-ratelimit-limit-requests" not in response.headers  # the key has no request limit

    # a stream whose client did not ask for usage is corrected all the same
    answer(upstream, 50)
    response = await limited.post("/v1/chat/completions", json={**STREAM, "max_completion_tokens": 600},
                                  headers=bearer(TOKENS))
    assert response.status == 200
    assert response.headers["x-ratelimit-remaining-tokens"] == "348"  # 1000 - 50 - 602: the first was corrected
    assert b'"usage"' not in await response.read()

    response = await limited.post("/v1/chat/completions", json={**STREAM, "max_tokens": 990}, headers=bearer(TOKENS))
    assert response.status == 429
    assert response.headers["x-ratelimit-remaining-tokens"] == "900"  # both corrected to 50
    assert response.headers["x-ratelimit-reset-tokens"] == "6s"
    assert response.headers["Retry-After"] == "6"  # 92 missing tokens at 1000 a minute: 5.52 s
    error = (await response.json())["error"]
    assert error["type"] == "tokens_per_minute"
    assert "requested 992" in error["message"]
    assert len(upstream.received) == 2


async def test_an_answer_longer_than_estimated_is_charged_in_full(limited, upstream):
    answer(upstream, 1500)
    response = await limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10}, headers=bearer(TOKENS))
    assert response.status == 200
    response = await limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10}, headers=bearer(TOKENS))
    assert response.status == 429
    assert response.headers["x-ratelimit-remaining-tokens"] == "0"
    assert response.headers["Retry-After"] == "31"  # from -500 back to 12 at 1000 a minute: 30.72 s


async def test_an_estimate_above_the_whole_budget_waits_for_a_full_bucket(limited, upstream):
    answer(upstream, 20)
    response = await limited.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000}, headers=bearer(TOKENS))
    assert response.status == 200


def test_estimate_counts_prompt_text_and_max_tokens_per_choice():
    image = {"type": "image_url", "image_url": {"url": "data:" + "A" * 999}}
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 37}, image]}], "max_tokens": 100}
    # every string but the image's data: ceil(("user" + "text" + 37 x + "image_url") / 4) = ceil(54 / 4)
    assert estimate_tokens(body) == 14 + 100
    assert estimate_tokens(body, choices=3) == 14 + 300
    assert estimate_tokens({"prompt": "abcd"}) == 1 + DEFAULT_COMPLETION_TOKENS


def test_used_tokens_reads_total_or_its_parts():
    assert used_tokens({"total_tokens": 12, "prompt_tokens": 1}) == 12
    assert used_tokens({"prompt_tokens": 3, "completion_tokens": 4}) == 7
    assert used_tokens({"prompt_tokens": 3}) is None
    assert used_tokens(None) is None


@given(st.lists(st.tuples(st.floats(0, 30), st.integers(1, 400), st.integers(0, 800)), max_size=40))
async def test_memory_budgets_never_admit_more_than_the_limit_plus_refill(steps):
    """Whatever the timing and usage, requests admitted over a span never exceed the limit plus its refill."""
    now = [0.0]
    backend = MemoryLimits(Metrics(), clock=lambda: now[0])
    key = ClientKey("k", "0" * 64, limits=KeyLimits(requests_per_minute=5, tokens_per_minute=1000))
    admitted = 0
    for advance, estimate, used in steps:
        now[0] += advance
        try:
            admission = await backend.admit(key, estimate)
        except Exception as exc:
            assert getattr(exc, "status", None) == 429
            continue
        admitted += 1
        await backend.settle(admission, used)
        assert int(admission.headers["x-ratelimit-remaining-requests"]) <= 5
    assert admitted <= 5 + now[0] * 5 / 60


# ---------------------------------------------------------------------------------------------- concurrent streams

async def test_second_stream_is_refused_while_the_first_is_open(limited, upstream):
    release = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), Wait(release),
                                sse(chat_chunk({}, "stop"))]))
    first = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert first.status == 200
    assert limiter(limited).open_streams("solo") == 1
    for body in (STREAM, CHAT):  # a combined answer is streamed from the provider too
        refused = await limited.post("/v1/chat/completions", json=body, headers=bearer(SOLO))
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        error = (await refused.json())["error"]
        assert (error["type"], error["code"]) == ("concurrent_streams", "rate_limit_exceeded")
        assert "1 streams already open" in error["message"]
    assert len(upstream.received) == 1
    release.set()
    assert (await read_all(first))[-1] == b"data: [DONE]"
    await released(limited)
    answer(upstream)
    assert (await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))).status == 200


async def test_slot_given_back_when_done(limited, upstream):
    answer(upstream)
    response = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert (await read_all(response))[-1] == b"data: [DONE]"
    assert limiter(limited).open_streams("solo") == 0
    answer(upstream)
    response = await limited.post("/v1/chat/completions", json=CHAT, headers=bearer(SOLO))
    assert response.status == 200
    assert limiter(limited).open_streams("solo") == 0


async def test_slot_given_back_on_an_upstream_error_before_content(limited, upstream):
    upstream.queue(Reply(status=500, steps=[b'{"error": {"message": "boom"}}'],
                         headers={"Content-Type": "application/json"}))
    response = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert response.status == 502
    assert limiter(limited).open_streams("solo") == 0


async def test_slot_given_back_on_an_upstream_error_mid_stream(limited, upstream):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), RESET]))
    response = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    events = await read_all(response)
    assert orjson.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_reset"
    await released(limited)


async def test_slot_given_back_on_an_idle_timeout(make_gateway, upstream):
    gateway = await make_gateway(extra=KEYS, timeouts="{connect: 2, first_byte: 0.3, idle: 0.3, total: 30}")
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    response = await gateway.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    events = await read_all(response)
    assert orjson.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_idle_timeout"
    await released(gateway)


async def test_slot_given_back_when_the_client_disconnects_mid_stream(limited, upstream):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    response = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert b"Hi" in await asyncio.wait_for(response.content.readuntil(b"Hi"), BOUND)
    assert limiter(limited).open_streams("solo") == 1
    response.connection.transport.abort()
    await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)
    await released(limited)


async def test_slot_given_back_when_the_handler_is_cancelled(limited, upstream):
    upstream.queue(Reply(steps=[sse(ROLE, done=False), HANG]))
    request = asyncio.ensure_future(limited.post("/v1/chat/completions", json=CHAT, headers=bearer(SOLO)))
    while upstream.active == 0:
        await asyncio.sleep(0.01)
    assert limiter(limited).open_streams("solo") == 1
    request.cancel()  # the client gives up on a combined answer: the server cancels its handler
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)
    await released(limited)


async def test_slot_given_back_when_the_chain_task_is_cancelled():
    """Cancellation straight through Chain: the task driving the stream is cancelled mid-stream."""
    backend = MemoryLimits(Metrics())
    key = ClientKey("solo", "0" * 64, limits=KeyLimits(concurrent_streams=1))
    streaming = asyncio.Event()

    async def source():
        yield [chat_chunk({"role": "assistant", "content": ""})]
        streaming.set()
        await asyncio.Event().wait()
        yield [chat_chunk({"content": "never"})]

    ctx = RequestContext(endpoint="chat", body=dict(CHAT), provider=None, model="m", requested_model="up/m",
                         stream=True, include_usage=False, client=key, settings={"ratelimit": backend})
    chain = Chain(ctx, source(), ("normalize", "ratelimit", "moderate"))

    async def consume():
        try:
            async for _ in chain:
                pass
        finally:
            await chain.aclose()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(streaming.wait(), BOUND)
    assert backend.open_streams("solo") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.open_streams("solo") == 0


async def test_slot_given_back_on_server_shutdown(limited, upstream):
    limited.server.app[CONFIG].server.shutdown_grace = 1  # in-flight requests are ended at once
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    response = await limited.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert b"Hi" in await asyncio.wait_for(response.content.readuntil(b"Hi"), BOUND)
    backend = limiter(limited)
    assert backend.open_streams("solo") == 1
    reading = asyncio.ensure_future(response.read())
    await asyncio.wait_for(limited.server.close(), BOUND)
    assert backend.open_streams("solo") == 0
    rest = await asyncio.wait_for(reading, BOUND)
    assert b"server_shutting_down" in rest and rest.endswith(b"data: [DONE]\n\n")


async def test_first_request_of_a_key_near_its_token_limit_is_not_a_false_429():
    """The bucket of a key's first request starts full at the admission's own clock reading: a clock that
    moves between two readings (as time.monotonic does) must not make the new bucket look drained."""
    ticks = iter(range(1_000_000))
    backend = MemoryLimits(Metrics(), clock=lambda: 1000.0 + next(ticks) * 0.001)
    key = ClientKey("first", "0" * 64, limits=KeyLimits(tokens_per_minute=1000))
    admission = await backend.admit(key, 1026)  # more than the whole budget: a full bucket admits it
    assert admission.headers["x-ratelimit-limit-tokens"] == "1000"
