"""GET /v1/models for providers with no `models:` list (a local Ollama, vLLM): what their own /models says.

Asked at most once per CACHE_SECONDS per provider, with a short timeout; a provider that cannot be asked (not
OpenAI-compatible, down, an answer that is not a model list) is listed as '<provider>/*'.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import orjson

from .config import Config, ProviderConfig

log = logging.getLogger("gateway")

CACHE_SECONDS = 60.0
TIMEOUT = 2.0  # seconds: /v1/models must stay quick even when a local provider is down
MAX_MODELS = 500  # per provider: a huge catalogue must not make /v1/models huge
MAX_BODY = 1 << 20


class ProviderModels:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[str, ...] | None]] = {}

    async def listed(self, config: Config, session: aiohttp.ClientSession) -> list[tuple[str, str]]:
        """(model id, owner) for each enabled provider without a `models` list."""
        open_ended = [p for p in config.providers.values() if p.enabled and p.models is None]
        answers = await asyncio.gather(*(self._models_of(p, session) for p in open_ended))
        listed: list[tuple[str, str]] = []
        for provider, models in zip(open_ended, answers):
            names = models if models is not None else ("*",)
            listed += [(f"{provider.name}/{name}", provider.name) for name in names]
        return listed

    async def _models_of(self, provider: ProviderConfig, session: aiohttp.ClientSession) -> tuple[str, ...] | None:
        cached = self._cache.get(provider.name)
        if cached is not None and self._clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
        models = await _ask(provider, session) if provider.kind == "openai" and provider.base_url else None
        self._cache[provider.name] = (self._clock(), models)
        return models


async def _ask(provider: ProviderConfig, session: aiohttp.ClientSession) -> tuple[str, ...] | None:
    headers = dict(provider.headers)
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    try:
        async with asyncio.timeout(TIMEOUT):
            async with session.get(provider.base_url + "/models", headers=headers) as response:
                if response.status != 200:
                    log.info("provider %s: GET /models answered %d; listed as %s/*", provider.name,
                             response.status, provider.name)
                    return None
                body = orjson.loads(await response.content.read(MAX_BODY))
    except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError, OSError) as exc:
        log.info("provider %s: GET /models failed (%s); listed as %s/*", provider.name, type(exc).__name__,
                 provider.name)
        return None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    names = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str) and m["id"]]
    return tuple(dict.fromkeys(name[:200] for name in names))[:MAX_MODELS]
