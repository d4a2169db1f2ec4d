"""Per-key limits: requests and tokens per minute and concurrent streams, in memory or in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..config import Config
from ..metrics import Metrics
from .base import Admission, Budget, LimitBackend
from .memory import MemoryLimits

LIMITER = web.AppKey("limiter", LimitBackend)

__all__ = ["LIMITER", "Admission", "Budget", "LimitBackend", "MemoryLimits",
           "create_limiter", "setup_limits"]


def create_limiter(config: Config, metrics: Metrics) -> LimitBackend:
    limits = config.limits
    if limits.backend == "redis":
        from .redis_backend import RedisLimits

        return RedisLimits(metrics, limits.url, limits.on_backend_error, pool_size=limits.redis_pool_size,
                           pool_wait=limits.redis_pool_wait)
    return MemoryLimits(metrics, limits.on_backend_error)


def setup_limits(app: web.Application, config: Config, metrics: Metrics) -> None:
    """The backend lives with the application: started on startup, closed on cleanup."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        limiter = app[LIMITER] = create_limiter(config, metrics)
        await limiter.start()
        yield
        await limiter.close()

    if any(key.limits for key in config.keys):
        app.cleanup_ctx.append(lifecycle)
