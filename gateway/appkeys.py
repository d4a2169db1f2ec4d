"""The aiohttp application keys (web.AppKey) for what handlers share: config, session, health, in-flight tasks."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from .config import Config
from .health import Health

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
