"""Per-key limits inside the stream. Keys and limits arrive with their own issue; until then a pass-through."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..context import RequestContext


async def ratelimit(ctx: RequestContext, chunks: AsyncIterator[dict]) -> AsyncIterator[dict]:
    async for chunk in chunks:
        yield chunk
