"""The application's resumable streams: its store (memory or redis, by `resume.backend`), the streams this
instance is reading now, and their ends at shutdown."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..config import ResumeConfig
from .memory_store import MemoryResumeStore
from .store import ResumeStore

if TYPE_CHECKING:
    from .relay import Relay

log = logging.getLogger("gateway.resume")

SHUTDOWN_WAIT = 5.0  # seconds the streams still read for absent clients get to end into the store at shutdown


class Resumes:
    """What the handlers share: the store, this instance's id in it, and the relays it runs."""

    def __init__(self, store: ResumeStore, config: ResumeConfig, owner: str) -> None:
        self.store = store
        self.config = config
        self.owner = owner
        self.relays: dict[str, Relay] = {}  # by stream id: streams whose upstream this instance reads


RESUME = web.AppKey("resume", Resumes)


def create_store(config: ResumeConfig, owner: str) -> ResumeStore:
    if config.backend == "redis":
        from .redis_store import RedisResumeStore  # redis-py is imported only when the config asks for it

        store: ResumeStore = RedisResumeStore(config, owner)
        return store
    return MemoryResumeStore(config.grace, config.max_bytes, config.max_total_bytes)


def setup_resume(app: web.Application, config: ResumeConfig) -> None:
    """The store is made with the app (its config is the first generation's: a reload does not change it)
    and started and closed with it."""
    owner = uuid.uuid4().hex
    resumes = app[RESUME] = Resumes(create_store(config, owner), config, owner)
    app.cleanup_ctx.append(_lifecycle(resumes))
    app.on_shutdown.append(_end_detached)


async def _end_detached(app: web.Application) -> None:
    """Shutdown: the shutdown grace is for clients still there. A stream read only for a client that left
    ends now, with the shutdown's error event last in the store, rather than hold the shutdown up."""
    from ..routes import shutting_down  # gateway.routes imports this package: not at import time

    for relay in list(app[RESUME].relays.values()):
        if not relay.attached:
            relay.end_with(shutting_down())


def _lifecycle(resumes: Resumes) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await resumes.store.start()
        yield
        # What the shutdown left running (a client that left during the grace): ended the same way
        from ..routes import shutting_down

        relays = list(resumes.relays.values())
        for relay in relays:
            relay.end_with(shutting_down())
        handlers = {relay.handler for relay in relays if relay.handler is not None}
        if handlers:
            await asyncio.wait(handlers, timeout=SHUTDOWN_WAIT)
        await resumes.store.close()

    return lifecycle
