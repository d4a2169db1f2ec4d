"""Provider adapters, one module per wire format, each holding one adapter object of the contract in
base.py. `ADAPTERS` is the one list of kinds: config validation reads it, with each kind's options.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import aiohttp

from ..chunks import Chunk
from ..errors import upstream_malformed
from ..upstream import upstream_events
from . import anthropic, demo, gemini, openai
from .base import HttpAdapter, LocalAdapter

if TYPE_CHECKING:
    from ..context import RequestContext

log = logging.getLogger("gateway.providers")

ADAPTERS: dict[str, HttpAdapter[Any, Any] | LocalAdapter] = {
    adapter.kind: adapter for adapter in (openai.ADAPTER, anthropic.ADAPTER, gemini.ADAPTER, demo.ADAPTER)
}


async def stream_chunks(ctx: RequestContext, session: aiohttp.ClientSession) -> AsyncGenerator[Chunk, None]:
    """The provider's answer as OpenAI chat chunks, ending in an error when the stream failed or was cut."""
    adapter = ADAPTERS[ctx.provider.kind]
    if isinstance(adapter, LocalAdapter):
        async with contextlib.aclosing(adapter.stream(ctx)) as chunks:
            async for chunk in chunks:
                yield chunk
        return
    provider = ctx.provider
    state = adapter.new_state(ctx)
    parse_event = adapter.parse_event
    strict = provider.on_malformed == "error"
    try:
        request = adapter.build_request(ctx)
        events = upstream_events(session, request, provider, state, adapter.decoder(provider), adapter.content_type,
                                 adapter.http_error, ctx.upstream_first_bytes)
        async with contextlib.aclosing(events):
            async for event in events:
                for chunk in parse_event(event, state):
                    yield chunk
                del event  # nor its last event while it waits for the next
                if strict and state.malformed:
                    raise upstream_malformed(provider.name)
                if state.done:  # the provider's end-of-stream event: not waiting for it to close
                    break
        for chunk in adapter.finish(state):
            yield chunk
    finally:
        if state.malformed:
            log.warning("provider %s sent %d malformed event(s) in request %s; skipped",
                        provider.name, state.malformed, ctx.request_id)
