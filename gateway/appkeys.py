"""The aiohttp application keys (web.AppKey) for what handlers share: config, session, health, in-flight tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import aiohttp
from aiohttp import web

from .config import Config
from .health import Health

if TYPE_CHECKING:
    from .auth import KeyTable
    from .limits.base import LimitBackend

CONFIG = web.AppKey("config", Config)
SESSION = web.AppKey("session", aiohttp.ClientSession)
HEALTH = web.AppKey("health", Health)


class InFlight:
    """Completion handlers still running, so that shutdown can end each one with a clear error."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.ending = False  # set when the shutdown grace is over: handlers cancelled now must say why
        self.timer: asyncio.Task[Any] | None = None


IN_FLIGHT = web.AppKey("in_flight", InFlight)


@dataclass(frozen=True)
class Generation:
    """One loaded providers.yaml and what is built from it; a reload (SIGHUP) makes a new one."""
    config: Config
    keys: KeyTable
    limiter: LimitBackend | None  # None: no key has limits
    number: int = 1


class Live:
    """The generation new requests get. A request reads it once (generation()) and keeps it to its end,
    so that a stream begun before a reload finishes on the config it began with."""

    def __init__(self, current: Generation) -> None:
        self.current = current
        self.refused = 0  # reloads refused for problems in the file (shown in /admin/health)


LIVE = web.AppKey("live", Live)
_GENERATION = web.RequestKey("generation", Generation)


def generation(request: web.BaseRequest) -> Generation:
    """The request's generation: read from the app on first use, the same one after."""
    found = request.get(_GENERATION)
    if found is None:
        found = request[_GENERATION] = cast(web.Request, request).app[LIVE].current  # a BaseRequest of the app
    return found
