"""Typed keys for what the application shares between handlers."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from .config import Config

CONFIG = web.AppKey("config", Config)
SESSION = web.AppKey("session", aiohttp.ClientSession)
