"""Provider adapters, one module per wire format, all of one shape.

An HTTP adapter module provides:
- `build_request(ctx) -> UpstreamRequest`: the upstream call for this client request;
- `new_state(ctx)`: the explicit per-request state its parser keeps, with `malformed` (a count) and
  `done` (the provider's end-of-stream event came: the stream ends there, whether or not the
  connection does);
- `parse_event(event, state) -> sequence of chunks`: a pure step from one SSE event to OpenAI chat chunks;
  raises GatewayError for an error the provider sent inside the stream;
- `finish(state) -> sequence of chunks`: called at the end of the stream; raises when it was truncated.

A local adapter (demo) provides `stream(ctx)` instead: an async iterator of the same chunks.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp

from ..context import RequestContext
from ..errors import upstream_malformed
from ..upstream import sse_events
from . import anthropic, demo, gemini, openai

log = logging.getLogger("gateway.providers")

ADAPTERS = {"openai": openai, "anthropic": anthropic, "gemini": gemini, "demo": demo}


def supported(kind: str) -> bool:
    return kind in ADAPTERS


async def stream_chunks(ctx: RequestContext, session: aiohttp.ClientSession) -> AsyncIterator[dict]:
    """The provider's answer as OpenAI chat chunks, ending in an error when the stream failed or was cut."""
    adapter = ADAPTERS[ctx.provider.kind]
    if hasattr(adapter, "stream"):
        async with contextlib.aclosing(adapter.stream(ctx)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    state = adapter.new_state(ctx)
    parse_event = adapter.parse_event
    strict = ctx.provider.on_malformed == "error"
    try:
        request = adapter.build_request(ctx)
        async with contextlib.aclosing(sse_events(session, request, ctx.provider, state)) as events:
            async for event in events:
                for chunk in parse_event(event, state):
                    yield chunk
                if strict and state.malformed:
                    raise upstream_malformed(ctx.provider.name)
                if state.done:  # the provider's end-of-stream event: not waiting for it to close
                    break
        for chunk in adapter.finish(state):
            yield chunk
    finally:
        if state.malformed:
            log.warning("provider %s sent %d malformed event(s) in request %s; skipped",
                        ctx.provider.name, state.malformed, ctx.request_id)
