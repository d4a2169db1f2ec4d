"""Provider adapters, one module per wire format, each holding one adapter object of the contract in
base.py. `ADAPTERS` is the one list of kinds: config validation reads it, with each kind's options.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import aiohttp

from ..chunks import Batch
from ..errors import GatewayError, upstream_malformed
from ..upstream import upstream_events
from . import anthropic, demo, gemini, openai
from .base import HttpAdapter, LocalAdapter

if TYPE_CHECKING:
    from ..context import RequestContext

log = logging.getLogger("gateway.providers")

ADAPTERS: dict[str, HttpAdapter[Any, Any] | LocalAdapter] = {
    adapter.kind: adapter for adapter in (openai.ADAPTER, anthropic.ADAPTER, gemini.ADAPTER, demo.ADAPTER)
}


async def stream_chunks(ctx: RequestContext, session: aiohttp.ClientSession) -> AsyncGenerator[Batch, None]:
    """The provider's answer as OpenAI chat chunks, one batch per upstream read, ending in an error when
    the stream failed or was cut. The chunks a read made before an error are passed on before it."""
    adapter = ADAPTERS[ctx.provider.kind]
    if isinstance(adapter, LocalAdapter):
        chunks = adapter.stream(ctx)
        try:
            async for chunk in chunks:
                yield [chunk]
        finally:
            await chunks.aclose()
        return
    provider = ctx.provider
    state = adapter.new_state(ctx)
    parse_event = adapter.parse_event
    strict = provider.on_malformed == "error"
    try:
        request = adapter.build_request(ctx)
        events = upstream_events(session, request, provider, state, adapter.decoder(provider), adapter.content_type,
                                 adapter.http_error, ctx.upstream_first_bytes)
        del request  # sent by upstream_events, which lets go of it then
        try:  # a try/finally, not contextlib.aclosing: the same close, at a third of the cost
            async for read in events:
                batch: Batch = []
                try:
                    for event in read:
                        batch += parse_event(event, state)
                        if state.done or (strict and state.malformed):
                            break  # the provider's end-of-stream event: not waiting for it to close
                except GatewayError:  # an error the provider sent: what came before it goes first
                    if batch:
                        yield batch
                    raise
                if batch:
                    yield batch
                del read, event, batch  # an idle stream holds neither its last read nor its chunks
                if strict and state.malformed:
                    raise upstream_malformed(provider.name)
                if state.done:
                    break
        finally:
            await events.aclose()
        last = adapter.finish(state)
        if last:
            yield list(last)
    finally:
        if state.malformed:
            log.warning("provider %s sent %d malformed event(s) in request %s; skipped",
                        provider.name, state.malformed, ctx.request_id)
