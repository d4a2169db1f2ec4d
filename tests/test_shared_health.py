"""Provider cooldowns shared through Redis: two gateway instances on one real redis-server; a cooldown one
instance enters makes the other skip the provider too, and a successful probe ends it on both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.appkeys import CONFIG, HEALTH, LIVE
from gateway.config import load_config, parse_config
from gateway.reload import reload
from tests.conftest import GatewayTestServer, gateway_yaml
from tests.fakes.upstream import Reply
from tests.helpers import BOUND, FAKE_KEY, bearer
from tests.redis_server import RATED, keys_yaml

CHAT = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
COOLDOWN = 120  # seconds: far longer than the test, so that only a probe's success can end it


async def instance(aiohttp_client, upstream, url: str):
    config = parse_config(gateway_yaml(upstream.url, extra=keys_yaml(url), middlewares="[normalize, ratelimit]",
                                       resilience=f"retry: {{attempts: 1}}\n    health: {{max_failures: 1, "
                                                  f"cooldown: {COOLDOWN}}}"), "test.yaml")
    return await aiohttp_client(GatewayTestServer(create_app(config)))


async def until(condition, what: str) -> None:
    try:
        async with asyncio.timeout(BOUND):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {BOUND} s: {what}") from None


async def test_a_cooldown_one_instance_enters_is_shared_with_every_instance(aiohttp_client, upstream, redis_url,
                                                                             redis):
    first = await instance(aiohttp_client, upstream, redis_url)
    second = await instance(aiohttp_client, upstream, redis_url)
    provider = first.app[CONFIG].providers["up"]
    upstream.queue(Reply(status=500, steps=[b'{"error": {"message": "down"}}'],
                         headers={"Content-Type": "application/json"}))
    response = await first.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))
    assert response.status == 502, await response.text()
    assert first.app[HEALTH].cooling_for(provider) > COOLDOWN - 10
    await until(lambda: second.app[HEALTH].cooling_for(provider) > 0, "the second instance learns the cooldown")
    assert 0 < await redis.pttl("gateway:health:up") <= COOLDOWN * 1000

    calls = len(upstream.received)
    response = await second.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "no_provider_available"
    assert len(upstream.received) == calls  # the second instance never called the failing provider

    # A probe that succeeds on the first instance ends the cooldown everywhere.
    first.app[HEALTH].succeeded(provider)
    await until(lambda: second.app[HEALTH].cooling_for(provider) == 0, "the second instance learns the end")
    assert await redis.exists("gateway:health:up") == 0


async def test_shared_health_keeps_a_local_cooldown_when_another_instance_recovers(aiohttp_client, upstream,
                                                                                   redis_url, redis):
    """The shared store only lengthens a cooldown, and its end only ends what was learnt from it."""
    first = await instance(aiohttp_client, upstream, redis_url)
    health = first.app[HEALTH]
    provider = first.app[CONFIG].providers["up"]
    health.failed(provider, "upstream_error")  # a local cooldown of COOLDOWN s, published
    await until(lambda: health.cooling_for(provider) > 0, "local cooldown")
    health.shared_cooldown("up", 1.0)  # a shorter shared one does not shorten it
    assert health.cooling_for(provider) > COOLDOWN - 10
    health.shared_cooldown("up", None)  # nor does the end of a shared one
    assert health.cooling_for(provider) > COOLDOWN - 10


def _late_provider(upstream_url: str) -> str:
    """A provider that only the reloaded file names."""
    return (f"  - name: late\n    kind: openai\n    base_url: {upstream_url}/v1\n    api_key: {FAKE_KEY}\n"
            f"    models: [m1]\n    health: {{max_failures: 1, cooldown: {COOLDOWN}}}\n")


def in_memory(redis_url: str) -> str:
    """keys_yaml's keys, their limits counted in memory."""
    return keys_yaml(redis_url).partition("\nlimits:")[0] + "\n"


def _text(upstream, limits: str, extra_provider: str = "") -> str:
    return gateway_yaml(upstream.url, extra=limits, extra_provider=extra_provider,
                        middlewares="[normalize, ratelimit]",
                        resilience=f"retry: {{attempts: 1}}\n    health: {{max_failures: 1, cooldown: {COOLDOWN}}}")


async def reloadable(aiohttp_client, path: Path, text: str):
    """An instance on the file `path`, so that reload() reads it again."""
    path.write_text(text)
    return await aiohttp_client(GatewayTestServer(create_app(load_config(path))))


async def reloaded(client, path: Path, text: str) -> None:
    path.write_text(text)
    assert await reload(client.app)


@pytest.mark.parametrize("before", ["redis", "memory"])
async def test_a_provider_added_by_a_reload_has_its_cooldowns_shared(aiohttp_client, upstream, redis_url, redis,
                                                                     tmp_path, before):
    """SIGHUP adds a provider (and, from `memory`, switches the limits to redis): its cooldowns are shared too."""
    limits = keys_yaml(redis_url)
    first_path, second_path = tmp_path / "first.yaml", tmp_path / "second.yaml"
    start = limits if before == "redis" else in_memory(redis_url)
    first = await reloadable(aiohttp_client, first_path, _text(upstream, start))
    second = await reloadable(aiohttp_client, second_path, _text(upstream, start))
    for client, path in ((first, first_path), (second, second_path)):
        await reloaded(client, path, _text(upstream, limits, _late_provider(upstream.url)))
    late = first.app[LIVE].current.config.providers["late"]

    first.app[HEALTH].failed(late, "upstream_error")  # max_failures 1: a cooldown, published
    await until(lambda: second.app[HEALTH].cooling_for(late) > 0, "the second instance learns the new provider's "
                                                                 "cooldown")
    assert 0 < await redis.pttl("gateway:health:late") <= COOLDOWN * 1000


async def test_a_reload_to_the_memory_backend_stops_sharing(aiohttp_client, upstream, redis_url, redis, tmp_path):
    path = tmp_path / "providers.yaml"
    client = await reloadable(aiohttp_client, path, _text(upstream, keys_yaml(redis_url)))
    health = client.app[HEALTH]
    assert health.publisher is not None
    await reloaded(client, path, _text(upstream, in_memory(redis_url)))
    assert health.publisher is None  # nothing published nor polled any more
    health.failed(client.app[LIVE].current.config.providers["up"], "upstream_error")
    assert health.cooling_for(client.app[LIVE].current.config.providers["up"]) > 0  # the local cooldown stays
    assert await redis.exists("gateway:health:up") == 0
