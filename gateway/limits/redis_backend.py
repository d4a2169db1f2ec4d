"""Limits kept in Redis, so that several gateway instances share one budget per key.

Each key has a requests bucket and a tokens bucket (hashes of `level` and `at`) and a sorted set of
the stream slots in use, scored by when each expires. Admission and settlement are Lua scripts, so
every check-and-charge is atomic across instances, and all times come from Redis's clock. A slot
expires SLOT_TTL seconds after its last refresh: each instance refreshes every slot it holds in one
pipelined round trip every SLOT_TTL / 3 seconds, so the slots of an instance that dies free up on
their own. A slot whose admission was cancelled mid-call (the client left) is not known locally and
frees up the same way.

Every call to Redis first takes one of `pool_size` permits, one per pooled connection, so that a burst
waits for a connection (back-pressure) instead of exhausting the pool. A request that cannot get one
within `pool_wait` seconds is refused with a 503 `limits_busy`, whatever on_backend_error says: Redis is
answering, it is only busy, and letting the request through uncounted would break the limit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..config import ClientKey
from ..metrics import Metrics
from .base import Admission, Budget, LimitBackend, backend_unavailable, budget_headers, limits_busy

log = logging.getLogger("gateway.limits")

SLOT_TTL = 30.0  # seconds a stream slot outlives the last refresh of the instance holding it
TIMEOUT = 1.0  # seconds for a Redis connect or reply: a hung Redis must not hang requests
POOL_SIZE = 50  # connections to Redis per instance
POOL_WAIT = 2.0  # seconds a request waits for one of them before a 503 limits_busy
BUSY_LOG_INTERVAL = 10.0  # seconds between two "busy" log lines

_CLOCK_AND_BUCKETS = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local WINDOW = 60000

local function level(key, limit)
  local saved = redis.call('HMGET', key, 'level', 'at')
  if not saved[1] then return limit end
  return math.min(limit, tonumber(saved[1]) + (now - tonumber(saved[2])) * limit / WINDOW)
end

local function save(key, limit, value)
  redis.call('HSET', key, 'level', tostring(value), 'at', tostring(now))
  -- a missing bucket is a full one: keep it only until it would have refilled
  redis.call('PEXPIRE', key, math.ceil((limit - value) * WINDOW / limit) + 1000)
end
"""

# KEYS: requests bucket, tokens bucket, stream slots
# ARGV: requests_per_minute, tokens_per_minute, token estimate, concurrent_streams (0: no such limit),
#       slot id, slot ttl (ms)
# Returns: refused limit name ('' when admitted), requests level, tokens level
_ADMIT = _CLOCK_AND_BUCKETS + """
local rpm, tpm, estimate, streams = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local requests, tokens = 0, 0
if rpm > 0 then requests = level(KEYS[1], rpm) end
if tpm > 0 then tokens = level(KEYS[2], tpm) end
local refused = ''
if rpm > 0 and requests < 1 then
  refused = 'requests_per_minute'
elseif tpm > 0 and tokens < math.min(estimate, tpm) then
  refused = 'tokens_per_minute'
elseif streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= streams then refused = 'concurrent_streams' end
end
if refused == '' then
  if rpm > 0 then requests = requests - 1; save(KEYS[1], rpm, requests) end
  if tpm > 0 then tokens = tokens - estimate; save(KEYS[2], tpm, tokens) end
  if streams > 0 then
    local ttl = tonumber(ARGV[6])
    redis.call('ZADD', KEYS[3], now + ttl, ARGV[5])
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
return {refused, tostring(requests), tostring(tokens)}
"""

# KEYS: tokens bucket, stream slots
# ARGV: tokens_per_minute (0: no such limit), tokens to give back (negative: to charge), slot id ('' none)
_SETTLE = _CLOCK_AND_BUCKETS + """
local tpm, correction = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and correction ~= 0 then
  save(KEYS[1], tpm, math.min(tpm, level(KEYS[1], tpm) + correction))
end
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
return 1
"""

# KEYS: stream slots; ARGV: slot ttl (ms), then the slot ids this instance holds there.
# XX: a slot released meanwhile stays released.
_REFRESH = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


def _keys(key_id: str) -> tuple[str, str, str]:
    # The {hash tag} keeps a key's three entries in one Redis Cluster slot, as a script needs.
    prefix = f"gateway:limits:{{{key_id}}}"
    return f"{prefix}:requests", f"{prefix}:tokens", f"{prefix}:streams"


class RedisLimits(LimitBackend):
    name = "redis"

    def __init__(self, metrics: Metrics, url: str, on_backend_error: str = "open", *, slot_ttl: float = SLOT_TTL,
                 pool_size: int = POOL_SIZE, pool_wait: float = POOL_WAIT) -> None:
        super().__init__(metrics, on_backend_error)
        self.url = url
        self.slot_ttl_ms = max(1, round(slot_ttl * 1000))
        self.instance = uuid.uuid4().hex[:12]
        self._numbers = itertools.count(1)
        self.held: dict[str, set[str]] = defaultdict(set)  # slot set -> slot ids this instance holds
        self._refresher: asyncio.Task[Any] | None = None
        self._failing = False
        self._gave_up: dict[str, int] = defaultdict(int)  # calls that found no connection, since the last line
        self._busy_logged_at = -BUSY_LOG_INTERVAL
        self.pool_wait = pool_wait
        # The pool never waits itself (the permits come first), but a wait beats MaxConnectionsError.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=pool_wait, socket_connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT, retry=Retry(NoBackoff(), 1))  # one retry: a stale pooled socket
        self._permits_total = pool.max_connections  # the url's ?max_connections= wins
        self._permits = asyncio.Semaphore(self._permits_total)
        self.client = aioredis.Redis.from_pool(pool)
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._refresh = self.client.register_script(_REFRESH)

    async def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await self.client.aclose()

    async def admit(self, key: ClientKey, tokens: int) -> Admission:
        limits = key.limits
        requests_key, tokens_key, streams_key = _keys(key.id)
        slot = f"{self.instance}:{next(self._numbers)}" if limits.concurrent_streams else None
        if not await self._permit("admit"):
            raise limits_busy()
        try:
            refused, requests_level, tokens_level = await self._admit(
                keys=(requests_key, tokens_key, streams_key),
                args=(limits.requests_per_minute or 0, limits.tokens_per_minute or 0, tokens,
                      limits.concurrent_streams or 0, slot or "", self.slot_ttl_ms))
        except (RedisError, OSError) as exc:
            self._failed("admit", exc)
            if self.on_backend_error == "closed":
                raise backend_unavailable() from None
            return Admission(key, tokens, counted=False)  # open: let it through uncounted
        finally:
            self._permits.release()
        self._recovered()
        requests = Budget(limits.requests_per_minute, float(requests_level)) if limits.requests_per_minute else None
        token_budget = Budget(limits.tokens_per_minute, float(tokens_level)) if limits.tokens_per_minute else None
        if refused:
            raise self.refuse(key, refused.decode(), requests, token_budget, tokens)
        if slot is not None:
            self.held[streams_key].add(slot)
        return Admission(key, tokens, slot, budget_headers(requests, token_budget))

    async def settle(self, admission: Admission, used_tokens: int | None) -> None:
        if admission.settled or not admission.counted:
            return
        admission.settled = True
        key = admission.key
        _, tokens_key, streams_key = _keys(key.id)
        if admission.slot is not None:  # stop refreshing it first: whatever happens next, it expires
            held = self.held.get(streams_key)
            if held is not None:
                held.discard(admission.slot)
                if not held:
                    del self.held[streams_key]
        correction = admission.tokens - used_tokens if used_tokens is not None else 0
        tpm = key.limits.tokens_per_minute or 0
        if admission.slot is None and (not tpm or not correction):
            return
        if not await self._permit("settle"):
            return  # the slot expires on its own; the token correction is lost
        try:
            await self._settle(keys=(tokens_key, streams_key), args=(tpm, correction, str(admission.slot or "")))
        except (RedisError, OSError) as exc:
            self._failed("settle", exc)
        else:
            self._recovered()
        finally:
            self._permits.release()

    async def refresh(self) -> None:
        """Pushes back the expiry of every slot this instance holds, in one round trip."""
        held = [(streams_key, tuple(slots)) for streams_key, slots in self.held.items()]
        if not held:
            return
        async with self._permits:  # no bound: slots must be refreshed before they expire, requests can wait
            async with self.client.pipeline(transaction=False) as pipe:
                for streams_key, slots in held:
                    await self._refresh(keys=(streams_key,), args=(self.slot_ttl_ms, *slots), client=pipe)
                await pipe.execute()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.slot_ttl_ms / 3000)
            try:
                await self.refresh()
            except (RedisError, OSError) as exc:
                self._failed("refresh", exc)

    async def _permit(self, operation: str) -> bool:
        """One of the pool's connections, waited for at most pool_wait seconds; False when none came."""
        try:
            async with asyncio.timeout(self.pool_wait):
                await self._permits.acquire()
        except TimeoutError:
            self._gave_up[operation] += 1
            now = time.monotonic()
            if now - self._busy_logged_at >= BUSY_LOG_INTERVAL:  # a line per interval, not one per request
                self._busy_logged_at = now
                counts = ", ".join(f"{n} {op}" for op, n in sorted(self._gave_up.items()))
                self._gave_up.clear()
                log.warning("limit backend redis busy: waited %.1f s for one of its %d connections and gave up "
                            "(%s); admissions are refused with 503 limits_busy meanwhile (limits.redis_pool_size)",
                            self.pool_wait, self._permits_total, counts)
            return False
        return True

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.metrics.limit_backend_errors.labels(self.name, operation, self.on_backend_error).inc()
        if not self._failing:  # one line per outage, not one per request
            self._failing = True
            action = ("requests are let through uncounted" if self.on_backend_error == "open"
                      else "requests are refused with 503 limits_unavailable")
            log.warning("limit backend redis failed on %s (%s: %s): %s until it answers again (on_backend_error: %s)",
                        operation, type(exc).__name__, exc, action, self.on_backend_error)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("limit backend redis answers again")
