"""Provider cooldowns shared through Redis (with `limits.backend: redis`), so that every instance stops
calling a provider that one of them found failing.

Nothing is added to the request path: each instance still decides from its own memory (gateway/health.py).
A cooldown entered here is written in the background as a key with that TTL (`gateway:health:<provider>`,
only ever lengthened); a successful probe after a cooldown deletes it. A background task reads every
provider's key TTL in one pipelined round trip every POLL_INTERVAL seconds and applies it locally. TTLs, not
timestamps, cross the wire: the instances' clocks need not agree. Staleness bound: another instance skips a
provider at most POLL_INTERVAL seconds (plus one Redis round trip) after the cooldown began, and stops skipping
it within the same bound after a probe succeeded. When Redis does not answer, each instance goes on with its
own cooldowns (logged once per outage).

What is shared follows the live generation (gateway/reload.py): a SIGHUP that adds a provider adds it to the
poll, one that switches `limits.backend` to or from redis (or moves its URL) starts, stops or moves the sharing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from .appkeys import HEALTH, LIVE
from .config import Config
from .health import Health

log = logging.getLogger("gateway.health")

POLL_INTERVAL = 1.0  # seconds between two reads of the shared cooldowns
TIMEOUT = 1.0  # seconds for a Redis connect or reply
PREFIX = "gateway:health:"

# KEYS[1]: the provider's key; ARGV: cooldown (ms), last error code. Lengthens, never shortens.
_ENTER = """
local left = redis.call('PTTL', KEYS[1])
if left < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1]) end
return left
"""


class SharedCooldowns:
    """The Health's publisher, and the poller that applies what other instances published."""

    def __init__(self, health: Health, providers: list[str], url: str, *,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self.health = health
        self.url = url
        self.providers = providers  # replaced whole by a reload (SharedHealth.follow)
        self.poll_interval = poll_interval
        self.client = aioredis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
        self._enter = self.client.register_script(_ENTER)
        self._writes: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._failing = False

    def entered(self, provider: str, seconds: float, code: str) -> None:
        self._background(self._enter(keys=[PREFIX + provider], args=[max(1, round(seconds * 1000)), code[:64]]))

    def ended(self, provider: str) -> None:
        self._background(self.client.delete(PREFIX + provider))

    def _background(self, call: Awaitable[object]) -> None:
        task = asyncio.ensure_future(self._quietly(call))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _quietly(self, call: Awaitable[object]) -> None:
        try:
            await call
            self._answered()
        except (RedisError, OSError) as exc:
            self._unanswered(exc)

    async def poll_once(self) -> None:
        names = self.providers  # the list a reload may replace while the round trip is out
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pttl(PREFIX + name)
            lefts = await pipe.execute()
        for name, left in zip(names, lefts):
            self.health.shared_cooldown(name, left / 1000 if left > 0 else None)

    async def _poll_forever(self) -> None:
        while True:
            try:
                await self.poll_once()
                self._answered()
            except (RedisError, OSError) as exc:
                self._unanswered(exc)
            await asyncio.sleep(self.poll_interval)

    def _answered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("shared provider health: Redis answers again")

    def _unanswered(self, exc: Exception) -> None:
        if not self._failing:
            self._failing = True
            log.warning("shared provider health: Redis does not answer (%s); cooldowns stay per instance",
                        type(exc).__name__)

    def start(self) -> None:
        self.health.publisher = self
        self._poller = asyncio.create_task(self._poll_forever())

    async def close(self) -> None:
        self.health.publisher = None
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self._writes:
            await asyncio.wait(self._writes, timeout=TIMEOUT)
        await self.client.aclose()


class SharedHealth:
    """The app's cooldown sharing, kept in step with the live generation: on while its `limits.backend` is
    redis, over the providers it names; off (nothing polled, nothing published) otherwise."""

    def __init__(self, health: Health, poll_interval: float = POLL_INTERVAL) -> None:
        self.health = health
        self.poll_interval = poll_interval
        self.shared: SharedCooldowns | None = None

    async def follow(self, config: Config) -> None:
        if config.limits.backend != "redis":
            await self.close()
            return
        if self.shared is not None and self.shared.url == config.limits.url:
            self.shared.providers = list(config.providers)
            return
        await self.close()  # a new URL: a new client
        self.shared = SharedCooldowns(self.health, list(config.providers), config.limits.url,
                                      poll_interval=self.poll_interval)
        self.shared.start()

    async def close(self) -> None:
        if self.shared is not None:
            shared, self.shared = self.shared, None
            await shared.close()


SHARED_HEALTH = web.AppKey("shared_health", SharedHealth)


def shared_health(poll_interval: float = POLL_INTERVAL) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: shares the app's provider cooldowns through the limits' Redis, while the live
    config's limits backend is redis (gateway/reload.py calls `follow` on each reload)."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        sharing = app[SHARED_HEALTH] = SharedHealth(app[HEALTH], poll_interval)
        await sharing.follow(app[LIVE].current.config)
        yield
        await sharing.close()

    return lifecycle
