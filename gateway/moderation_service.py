"""The client of an external moderation service shaped like OpenAI's: POST {"input": text} -> results[].flagged."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson

from .moderation_config import ModerationService

log = logging.getLogger("gateway")


async def is_flagged(session: aiohttp.ClientSession, service: ModerationService, text: str,
                     request_id: str) -> bool:
    """Whether the service flags the text. A check that fails or takes longer than `timeout` seconds
    counts as flagged when `on_error` is block, else as allowed."""
    try:
        async with asyncio.timeout(service.timeout):
            async with session.post(service.url, data=orjson.dumps({"input": text}), allow_redirects=False,
                                    headers={"Content-Type": "application/json"}) as response:
                body = await response.read()
                if response.status != 200:
                    raise ValueError(f"status {response.status}")
        results = orjson.loads(body)["results"]
        if not isinstance(results, list) or not results:
            raise ValueError("no results")
        return any(isinstance(r, dict) and r.get("flagged") is True for r in results)
    except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError) as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else f"failed ({type(exc).__name__})"
        log.warning("request %s: the moderation check %s; on_error=%s", request_id, reason, service.on_error)
        return service.on_error == "block"
