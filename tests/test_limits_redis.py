"""Per-key limits in Redis: a real redis-server on a free port, several gateway instances sharing one
budget, slots that expire when their instance dies, and the on_backend_error policy when Redis is down."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import aiohttp
import pytest

from gateway.app import create_app
from gateway.config import ClientKey, KeyLimits, parse_config
from gateway.errors import GatewayError
from gateway.appkeys import LIVE
from gateway.limits import Admission
from gateway.limits.redis_backend import RedisLimits
from gateway.metrics import Metrics
from tests.conftest import gateway_yaml
from tests.fakes.upstream import HANG, FakeUpstream, Reply, Wait, chat_chunk, sse
from tests.serving import served
from tests.helpers import bearer, digest, free_port
from tests.redis_server import RATED, SOLO, keys_yaml

ROOT = Path(__file__).resolve().parents[1]
BOUND = 10
SOLO_SLOTS = "gateway:limits:{solo}:streams"
CHAT = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
ROLE = chat_chunk({"role": "assistant", "content": ""})


def answer(upstream, total: int = 7) -> None:
    upstream.stream(sse(ROLE, chat_chunk({"content": "Hi"}), chat_chunk({}, "stop"),
                        chat_chunk(choices=[], usage={"prompt_tokens": 2, "completion_tokens": total - 2,
                                                      "total_tokens": total})))


@pytest.fixture
def make_instance(aiohttp_client, upstream):
    """One more gateway instance in front of the same upstream and the same limits backend."""

    async def make(url: str, on_error: str = "open", **options):
        config = parse_config(gateway_yaml(upstream.url, extra=keys_yaml(url, on_error), **options), "test.yaml")
        return await aiohttp_client(create_app(config))

    return make


async def until(condition, what: str) -> None:
    async with asyncio.timeout(BOUND):
        while not await condition():
            await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------------- shared budgets

async def test_two_instances_enforce_one_concurrent_streams_limit(make_instance, upstream, redis_url, redis):
    first, second = await make_instance(redis_url), await make_instance(redis_url)
    release = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), Wait(release),
                                sse(chat_chunk({}, "stop"))]))
    held = await first.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert held.status == 200
    assert await redis.zcard(SOLO_SLOTS) == 1
    for instance in (second, first):
        refused = await instance.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
        assert refused.status == 429
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json())["error"]["type"] == "concurrent_streams"
    assert len(upstream.received) == 1
    release.set()
    assert (await asyncio.wait_for(held.read(), BOUND)).endswith(b"data: [DONE]\n\n")
    await until(lambda: _zero(redis.zcard(SOLO_SLOTS)), "the slot is given back")
    answer(upstream)
    response = await second.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert response.status == 200
    await response.read()


async def _zero(awaitable) -> bool:
    return await awaitable == 0


async def test_two_instances_share_one_requests_budget(make_instance, upstream, redis_url):
    first, second = await make_instance(redis_url), await make_instance(redis_url)
    remaining = []
    for instance in (first, second, first):
        answer(upstream)
        response = await instance.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))
        assert response.status == 200
        remaining.append(response.headers["x-ratelimit-remaining-requests"])
        assert response.headers["x-ratelimit-limit-requests"] == "3"
        assert response.headers["x-ratelimit-limit-tokens"] == "100000"
    assert remaining == ["2", "1", "0"]
    response = await second.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))
    assert response.status == 429
    assert (await response.json())["error"]["type"] == "requests_per_minute"
    assert 1 <= int(response.headers["Retry-After"]) <= 20  # one request refills in 20 s
    for name in ("limit", "remaining", "reset"):
        assert f"x-ratelimit-{name}-requests" in response.headers
        assert f"x-ratelimit-{name}-tokens" in response.headers
    assert len(upstream.received) == 3


async def test_tokens_are_corrected_by_real_usage(redis_url):
    backend = RedisLimits(Metrics(), redis_url)
    key = ClientKey("tok", "0" * 64, limits=KeyLimits(tokens_per_minute=1000))
    try:
        admission = await backend.admit(key, 600)
        assert admission.headers["x-ratelimit-remaining-tokens"] == "400"
        await backend.settle(admission, 50)
        admission = await backend.admit(key, 600)  # only fits because the first was corrected to 50
        assert 350 <= int(admission.headers["x-ratelimit-remaining-tokens"]) < 400
        await backend.settle(admission, 900)  # longer than estimated: charged in full
        with pytest.raises(GatewayError) as refused:
            await backend.admit(key, 100)
        assert refused.value.status == 429 and refused.value.type == "tokens_per_minute"
        assert refused.value.headers["x-ratelimit-remaining-tokens"] == "50"
    finally:
        await backend.close()


# ---------------------------------------------------------------------------------------------- slot lifetime

async def test_slots_of_a_dead_instance_expire(redis_url, redis):
    key = ClientKey("solo", "0" * 64, limits=KeyLimits(concurrent_streams=1))
    dying, survivor = RedisLimits(Metrics(), redis_url, slot_ttl=0.3), RedisLimits(Metrics(), redis_url, slot_ttl=0.3)
    await dying.start()
    await survivor.start()
    try:
        await dying.admit(key, 1)
        with pytest.raises(GatewayError):
            await survivor.admit(key, 1)
        await dying.close()  # it dies holding the slot: no release, no more refreshes
        assert await redis.zcard(SOLO_SLOTS) == 1

        async def admitted() -> bool:
            try:
                await survivor.admit(key, 1)
            except GatewayError:
                return False
            return True

        await until(admitted, "the dead instance's slot expires")
    finally:
        await survivor.close()


async def test_slots_of_a_live_instance_are_refreshed(redis_url, redis):
    key = ClientKey("solo", "0" * 64, limits=KeyLimits(concurrent_streams=1))
    holder, other = RedisLimits(Metrics(), redis_url, slot_ttl=0.3), RedisLimits(Metrics(), redis_url, slot_ttl=0.3)
    await holder.start()
    try:
        admission = await holder.admit(key, 1)
        first_expiry = (await redis.zrange(SOLO_SLOTS, 0, -1, withscores=True))[0][1]
        await asyncio.sleep(1.0)  # three slot lifetimes
        assert (await redis.zrange(SOLO_SLOTS, 0, -1, withscores=True))[0][1] > first_expiry
        with pytest.raises(GatewayError):
            await other.admit(key, 1)
        await holder.settle(admission, None)
        assert await redis.zcard(SOLO_SLOTS) == 0
        await other.settle(await other.admit(key, 1), None)
    finally:
        await holder.close()
        await other.close()


async def test_client_disconnect_gives_the_redis_slot_back(make_instance, upstream, redis_url, redis):
    gateway = await make_instance(redis_url)
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    response = await gateway.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    await asyncio.wait_for(response.content.readuntil(b"Hi"), BOUND)
    assert await redis.zcard(SOLO_SLOTS) == 1
    response.connection.transport.abort()
    await until(lambda: _zero(redis.zcard(SOLO_SLOTS)), "the slot is given back")
    assert not gateway.server.app[LIVE].current.limiter.held


async def test_server_shutdown_gives_the_redis_slot_back(aiohttp_server, tmp_path, redis_url, redis):
    fake = FakeUpstream()
    upstream = await aiohttp_server(fake.app)
    fake.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), HANG]))
    port = free_port()
    config = f"""
server: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1, sse_keepalive: 30}}
providers:
  - {{name: up, kind: openai, base_url: "http://127.0.0.1:{upstream.port}/v1", api_key: sk-test-shutdown000000}}
middlewares: [normalize, ratelimit]
{keys_yaml(redis_url)}
"""
    async with served(config, port, tmp_path) as (gateway, log):
        async with aiohttp.ClientSession() as session, asyncio.timeout(BOUND):
            streaming = await session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=STREAM,
                                           headers=bearer(SOLO))
            assert streaming.status == 200
            await streaming.content.readuntil(b"Hi")
            assert await redis.zcard(SOLO_SLOTS) == 1
            gateway.send_signal(signal.SIGTERM)
            rest = await streaming.read()
            assert b"server_shutting_down" in rest and rest.endswith(b"data: [DONE]\n\n")
        assert gateway.wait(BOUND) == 0
    assert await redis.zcard(SOLO_SLOTS) == 0, log.read_text()  # given back, not left to expire


# ---------------------------------------------------------------------------------------------- Redis down

async def test_redis_down_fails_open_with_a_log_line_and_a_metric(make_instance, upstream, caplog):
    caplog.set_level(logging.INFO, logger="gateway.limits")
    gateway = await make_instance(f"redis://127.0.0.1:{free_port()}/0", "open")  # nothing listens there
    for _ in range(2):
        answer(upstream)
        response = await gateway.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
        assert response.status == 200
        assert "x-ratelimit-limit-requests" not in response.headers
        assert (await response.read()).endswith(b"data: [DONE]\n\n")
    failures = [r for r in caplog.records if "limit backend redis failed" in r.getMessage()]
    assert len(failures) == 1  # one line per outage, not one per request
    assert failures[0].levelname == "WARNING" and "let through uncounted" in failures[0].getMessage()
    metrics = await (await gateway.get("/metrics")).text()
    assert ('gateway_limit_backend_errors_total{backend="redis",on_backend_error="open",operation="admit"} 2.0'
            in metrics)


async def test_redis_down_fails_closed_with_a_503(make_instance, upstream, caplog):
    gateway = await make_instance(f"redis://127.0.0.1:{free_port()}/0", "closed")
    response = await gateway.post("/v1/chat/completions", json=STREAM, headers=bearer(SOLO))
    assert response.status == 503
    error = (await response.json())["error"]
    assert (error["code"], error["type"]) == ("limits_unavailable", "service_unavailable")
    assert upstream.received == []
    assert any("limit backend redis failed" in r.getMessage() for r in caplog.records)
    metrics = await (await gateway.get("/metrics")).text()
    assert ('gateway_limit_backend_errors_total{backend="redis",on_backend_error="closed",operation="admit"} 1.0'
            in metrics)


async def test_a_redis_that_comes_back_is_used_again(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="gateway.limits")
    key = ClientKey("solo", "0" * 64, limits=KeyLimits(concurrent_streams=1))
    backend = RedisLimits(Metrics(), redis_server.url)
    try:
        assert (await backend.admit(key, 1)).counted
        redis_server.stop()
        outage = await backend.admit(key, 1)
        assert not outage.counted
        await backend.settle(outage, 5)  # nothing was counted: nothing to give back
        assert "limit backend redis failed on admit" in caplog.text
        await redis_server.start()  # the same port, empty again
        assert (await backend.admit(key, 1)).counted
        assert "limit backend redis answers again" in caplog.text
    finally:
        await backend.close()


# ---------------------------------------------------------------------------------------------- bursts

BURST = 250
BURSTY = "gwk-bursty-0123456789abcdef"


def burst_yaml(url: str, limits: str) -> str:
    return f"""
keys:
  - {{id: bursty, sha256: {digest(BURSTY)}, limits: {limits}}}
limits: {{backend: redis, url: "{url}", on_backend_error: open}}
"""


async def burst(upstream, url: str, limits: str, aiohttp_server, body: dict):
    """BURST requests at once, alternating between two gateway instances that share one Redis, each over
    its own connection (no client-side pool cap), so that the admissions really are concurrent."""
    config = parse_config(gateway_yaml(upstream.url, extra=burst_yaml(url, limits)), "test.yaml")
    instances = [await aiohttp_server(create_app(config)) for _ in range(2)]
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    urls = [str(instance.make_url("/v1/chat/completions")) for instance in instances]
    async with asyncio.timeout(BOUND * 3):
        responses = await asyncio.gather(*(session.post(urls[i % 2], json=body, headers=bearer(BURSTY))
                                           for i in range(BURST)))
    return session, responses


async def test_a_burst_over_two_instances_admits_exactly_requests_per_minute(redis_url, aiohttp_server, upstream):
    upstream.default = Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), chat_chunk({}, "stop"))])
    session, responses = await burst(upstream, redis_url, "{requests_per_minute: 30}", aiohttp_server, CHAT)
    try:
        statuses = sorted(response.status for response in responses)
        assert statuses.count(200) == 30 and statuses.count(429) == BURST - 30, statuses
        assert len(upstream.received) == 30
    finally:
        for response in responses:
            response.release()
        await session.close()


async def test_a_burst_over_two_instances_admits_exactly_concurrent_streams(redis_url, aiohttp_server, upstream,
                                                                            redis):
    release = asyncio.Event()
    upstream.default = Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), Wait(release),
                                    sse(chat_chunk({}, "stop"))])
    session, responses = await burst(upstream, redis_url, "{concurrent_streams: 3}", aiohttp_server, STREAM)
    try:
        held = [response for response in responses if response.status == 200]
        assert len(held) == 3, sorted(response.status for response in responses)
        assert sum(response.status == 429 for response in responses) == BURST - 3
        assert len(upstream.received) == 3
        assert await redis.zcard("gateway:limits:{bursty}:streams") == 3
        release.set()
        async with asyncio.timeout(BOUND):
            for response in held:
                assert (await response.read()).endswith(b"data: [DONE]\n\n")
    finally:
        release.set()
        for response in responses:
            response.release()
        await session.close()


async def test_a_burst_larger_than_the_pool_waits_for_a_connection_and_counts_exactly(redis_url):
    """Pool exhaustion is back-pressure: 250 admissions through 2 connections, none let through uncounted."""
    key = ClientKey("bursty", "0" * 64, limits=KeyLimits(requests_per_minute=30))
    backends = [RedisLimits(Metrics(), redis_url, pool_size=2, pool_wait=BOUND) for _ in range(2)]
    try:
        async with asyncio.timeout(BOUND * 2):
            outcomes = await asyncio.gather(*(backends[i % 2].admit(key, 1) for i in range(BURST)),
                                            return_exceptions=True)
        admitted = [outcome for outcome in outcomes if isinstance(outcome, Admission)]
        assert len(admitted) == 30 and all(admission.counted for admission in admitted)
        refused = [outcome for outcome in outcomes if isinstance(outcome, GatewayError)]
        assert len(refused) == BURST - 30 and {error.type for error in refused} == {"requests_per_minute"}
        for backend in backends:
            pool = backend.client.connection_pool
            assert pool.max_connections == 2
    finally:
        for backend in backends:
            await backend.close()


async def test_no_connection_within_the_pool_wait_is_a_503_limits_busy_even_when_failing_open(caplog):
    """A Redis that is slow to answer holds the only connection: the next admission waits pool_wait, then is
    refused (never let through uncounted); the one waiting on Redis, when Redis goes, follows on_backend_error."""
    got_command = asyncio.Event()
    peers: list[asyncio.StreamWriter] = []

    async def silent_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        await reader.read(1)
        got_command.set()
        await reader.read()  # never answers

    server = await asyncio.start_server(silent_redis, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisLimits(Metrics(), f"redis://127.0.0.1:{port}/0", "open", pool_size=1, pool_wait=0.05)
    key = ClientKey("bursty", "0" * 64, limits=KeyLimits(requests_per_minute=30))
    try:
        async with asyncio.timeout(BOUND):
            first = asyncio.create_task(backend.admit(key, 1))
            await got_command.wait()  # the first admission holds the only connection
            with pytest.raises(GatewayError) as busy:
                await backend.admit(key, 1)
            assert (busy.value.status, busy.value.code, busy.value.type) == (503, "limits_busy",
                                                                            "service_unavailable")
            assert busy.value.headers["Retry-After"] == "1"
            assert "limit backend redis busy" in caplog.text
            server.close()  # Redis goes away: the admission waiting on it fails at once
            for writer in peers:
                writer.close()
            assert not (await first).counted  # and follows on_backend_error: an outage
    finally:
        await backend.close()
        for writer in peers:
            writer.close()
        server.close()
        await server.wait_closed()
