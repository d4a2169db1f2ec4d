"""Provider cooldowns shared through Redis: two gateway instances on one real redis-server; a cooldown one
instance enters makes the other skip the provider too, and a successful probe ends it on both."""

from __future__ import annotations

import asyncio

from gateway.app import create_app
from gateway.appkeys import CONFIG, HEALTH
from gateway.config import parse_config
from tests.conftest import GatewayTestServer, gateway_yaml
from tests.fakes.upstream import Reply
from tests.helpers import BOUND, bearer
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
