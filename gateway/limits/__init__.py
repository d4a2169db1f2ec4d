"""Per-key limits: requests and tokens per minute and concurrent streams, in memory or in Redis."""

from __future__ import annotations

import asyncio
import logging

from ..config import ClientKey, Config, LimitsConfig
from ..metrics import Metrics
from .base import Admission, Budget, LimitBackend
from .memory import MemoryLimits, _KeyState

__all__ = ["Admission", "Budget", "LimitBackend", "MemoryLimits", "create_limiter", "hand_over", "ping",
           "wants_limiter"]

log = logging.getLogger("gateway.limits")
PING_TIMEOUT = 2.0


def wants_limiter(config: Config) -> bool:
    return any(key.limits for key in config.keys)


def create_limiter(config: Config, metrics: Metrics) -> LimitBackend:
    limits = config.limits
    if limits.backend == "redis":
        from .redis_backend import RedisLimits

        return RedisLimits(metrics, limits.url, limits.on_backend_error, pool_size=limits.redis_pool_size,
                           pool_wait=limits.redis_pool_wait)
    return MemoryLimits(metrics, limits.on_backend_error)


def _same_backend(old: LimitsConfig, new: LimitsConfig) -> bool:
    return (old.backend, old.url, old.redis_pool_size, old.redis_pool_wait) == \
        (new.backend, new.url, new.redis_pool_size, new.redis_pool_wait)


def hand_over(previous: LimitBackend | None, old: Config, new: Config) -> LimitBackend | None:
    """On a reload: the backend in use when the new config names the same one (a Redis client stays
    connected, memory budgets of keys that still exist stay spent), else None: build a new one.
    on_backend_error follows the new config either way."""
    if previous is None or not _same_backend(old.limits, new.limits):
        return None
    previous.on_backend_error = new.limits.on_backend_error
    if isinstance(previous, MemoryLimits):
        _keep_existing_keys(previous, new.keys)
    return previous


def _keep_existing_keys(limiter: MemoryLimits, keys: tuple[ClientKey, ...] | list[ClientKey]) -> None:
    by_id = {key.id: key for key in keys if key.limits}
    for key_id, state in list(limiter.states.items()):
        key = by_id.get(key_id)
        if key is None and not state.streams:
            del limiter.states[key_id]  # a key with open streams keeps its slot count until they settle
        elif key is not None and _limits_changed(state, key):
            fresh = _KeyState(key, limiter.clock())
            fresh.streams = state.streams  # streams in flight settle against the new state
            limiter.states[key_id] = fresh


def _limits_changed(state: _KeyState, key: ClientKey) -> bool:
    limits = key.limits
    return ((state.requests.limit if state.requests else None) != limits.requests_per_minute
            or (state.tokens.limit if state.tokens else None) != limits.tokens_per_minute)


async def ping(limiter: LimitBackend | None) -> str | None:
    """None when the backend answers (memory always does); else why not, in words without the URL."""
    client = getattr(limiter, "client", None)
    if client is None:
        return None
    try:
        async with asyncio.timeout(PING_TIMEOUT):
            await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "does not answer"; its class says which
        return f"redis does not answer ({type(exc).__name__})"
    return None
