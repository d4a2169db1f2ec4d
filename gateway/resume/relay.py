"""The owner's side of a resumable stream: the chain pumped by a task of its own, each event numbered,
kept in the store and sent to the client while it is there.

aiohttp cancels a handler whose client went away, and with it whatever the handler awaits: so the
stream (gateway/routes.py `_stream`, unchanged) runs in the relay's pump task and the handler only waits
for it. When the client leaves, the pump goes on into the store; a watch cancels it once nobody has
read the stream for `resume.grace` seconds. The handler still ends with the pump, so the chain is closed
and the access line written where they always are, with what finally happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Coroutine, Mapping
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from ..access_log import CLIENT_DISCONNECTED, AccessRecord
from ..appkeys import IN_FLIGHT, InFlight
from ..config import ClientKey
from ..context import RequestContext
from ..errors import GatewayError, invalid_param
from ..sse import EventStream
from .service import RESUME, Resumes
from .store import StreamMeta

log = logging.getLogger("gateway.resume")

RESUMABLE_HEADER = "X-Gateway-Resumable"  # request: 1 or 0, for clients that cannot add body fields
STREAM_ID_HEADER = "X-Stream-Id"
STREAM_TOKEN_HEADER = "X-Stream-Token"  # response: the resume token; request (resume): the token again
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"0", "false", "no", "off"})
MIN_WATCH_STEP = 0.05  # seconds: the grace watch's shortest sleep, so a grace of 0 with a reader never spins

# How the stream ended for the access line's `resume` field.
ATTACHED = "attached"  # the client was there to the end
DETACHED = "detached"  # the client left; the stream ended into the store
ABANDONED = "abandoned"  # nobody resumed within the grace: the upstream was cancelled
OVER_CAP = "over_cap"  # the store refused an event (byte caps): no longer resumable
CANCELLED = "cancelled"  # DELETE /v2/streams/{id}


def wants_resume(request: web.Request, body: Mapping[str, Any], key: ClientKey | None) -> bool:
    """The request's own choice (stream_options.resumable, else the header), else the key's default."""
    asked = (body.get("stream_options") or {}).get("resumable")
    if isinstance(asked, bool):
        return asked
    header = request.headers.get(RESUMABLE_HEADER)
    if header is not None:
        value = header.strip().lower()
        if value in _ON or value in _OFF:
            return value in _ON
        raise invalid_param(RESUMABLE_HEADER, f"the {RESUMABLE_HEADER} header must be 1 or 0", "invalid_header")
    return key is not None and key.resumable


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def stream_cancelled() -> GatewayError:
    return GatewayError(409, "the stream was stopped by DELETE /v2/streams/{id}", code="stream_cancelled")


async def open_relay(request: web.Request, ctx: RequestContext, record: AccessRecord) -> Relay:
    """A new resumable stream for this request, registered in the store; its id and token go on the 200."""
    resumes = request.app[RESUME]
    token = secrets.token_urlsafe(32)
    meta = StreamMeta(stream_id=secrets.token_urlsafe(16), key_id=ctx.client.id if ctx.client else None,
                      token_sha256=token_digest(token), owner=resumes.owner, created=time.time())
    relay = Relay(resumes, meta.stream_id, request.app[IN_FLIGHT])
    try:
        await resumes.store.open(meta, relay.stop)
    except Exception as exc:  # noqa: BLE001 - whatever the backend raised, the request gets a clear 503
        log.warning("resumable stream not opened: the resume store failed (%s)", type(exc).__name__)
        raise GatewayError(503, "resumable streams are unavailable now: retry, or ask without resumable",
                           type="service_unavailable", code="resume_unavailable") from None
    resumes.relays[meta.stream_id] = relay
    ctx.response_headers[STREAM_ID_HEADER] = meta.stream_id
    ctx.response_headers[STREAM_TOKEN_HEADER] = token
    record.stream_id = meta.stream_id
    return relay


class Relay:
    """One resumable stream read by this instance: its numbering, its client (while attached) and its pump."""

    def __init__(self, resumes: Resumes, stream_id: str, in_flight: InFlight) -> None:
        self.resumes = resumes
        self.in_flight = in_flight
        self.store = resumes.store
        self.stream_id = stream_id
        self.id_prefix = b"id: " + stream_id.encode("ascii") + b"."  # each event: id: <stream id>.<seq>
        self.seq = 0
        self.attached = True  # the client that started it still reads it
        self.committed = False  # the 200 with the stream's id went out: only then can anyone resume it
        self.resumable = True  # the store holds every event so far
        self.ending: str | None = None  # ABANDONED, OVER_CAP or CANCELLED when one of those ended it
        self.response: ResumableEventStream | None = None
        self.pump: asyncio.Task[tuple[web.StreamResponse, str]] | None = None
        self.handler: asyncio.Task[Any] | None = None
        self._watch: asyncio.Task[None] | None = None

    def event_stream(self, keepalive: float, send_timeout: float) -> EventStream:
        """The response `_stream` opens (its `make_response`)."""
        self.response = ResumableEventStream(self, keepalive, send_timeout)
        return self.response

    async def run(self, streaming: Coroutine[Any, Any, tuple[web.StreamResponse, str]],
                  record: AccessRecord) -> tuple[web.StreamResponse, str]:
        """Runs `streaming` in the pump and waits for it, whatever happens to this (the handler's) task."""
        handler = self.handler = asyncio.current_task()
        assert handler is not None
        in_flight = self.in_flight
        pump = self.pump = asyncio.create_task(self._pump(streaming))
        try:
            while not pump.done():
                try:
                    await asyncio.wait((pump,))
                except asyncio.CancelledError:  # the client went away, or shutdown's grace is over
                    handler.uncancel()
                    if in_flight.ending:
                        pump.cancel()  # `_stream` ends it with the shutdown's error event, kept for a resume
                    else:
                        self.detach()
        finally:
            self.resumes.relays.pop(self.stream_id, None)
            record.resume = self.ending or (ATTACHED if self.attached else DETACHED)
        if pump.cancelled():
            response = self.response
            if response is None or not response.prepared:
                return web.Response(status=499), CLIENT_DISCONNECTED
            return response, CLIENT_DISCONNECTED
        return pump.result()

    async def _pump(self, streaming: Coroutine[Any, Any, tuple[web.StreamResponse, str]]
                    ) -> tuple[web.StreamResponse, str]:
        ended = False
        try:
            result = await streaming
            ended = True
            return result
        finally:
            if self._watch is not None:
                self._watch.cancel()
            if self.resumable:
                self.resumable = False
                try:
                    if ended and self.committed:
                        await self.store.finish(self.stream_id)  # kept for the grace, for a late resume
                    else:
                        await self.store.drop(self.stream_id)
                except Exception as exc:  # noqa: BLE001 - the stream itself is over either way
                    log.warning("resume store failed to end stream %s (%s)", self.stream_id, type(exc).__name__)

    async def keep(self, seq: int, event: bytes) -> None:
        """Event `seq` into the store; past its caps the stream stops being resumable."""
        try:
            kept = await self.store.append(self.stream_id, seq, event)
        except Exception as exc:  # noqa: BLE001 - the stream goes on without being resumable
            log.warning("resume store failed on stream %s (%s): no longer resumable", self.stream_id,
                        type(exc).__name__)
            kept = False
            try:
                await self.store.drop(self.stream_id)
            except Exception:  # noqa: BLE001 - already said
                pass
        if not kept:
            self.resumable = False
            self.ending = self.ending or OVER_CAP
            if not self.attached and self.pump is not None:
                self.pump.cancel()  # nobody reads it and nobody can resume it

    def detach(self) -> None:
        """The client went away: go on for the grace if it may come back, else stop the upstream now."""
        if not self.attached:
            return
        self.attached = False
        pump = self.pump
        if pump is None or pump.done():
            return
        if not (self.committed and self.resumable):
            pump.cancel()
        else:
            self._watch = asyncio.create_task(self._watch_grace(pump))

    async def _watch_grace(self, pump: asyncio.Task[Any]) -> None:
        """Cancels the pump once no one has been reading the stream for `grace` seconds (checked every
        quarter of it: the upstream is read between 1 and 1.25 graces after the last reader left)."""
        loop = asyncio.get_running_loop()
        grace = self.resumes.config.grace
        step = max(grace / 4, MIN_WATCH_STEP)
        last_seen = loop.time()
        while not pump.done():
            now = loop.time()
            try:
                reading = await self.store.has_readers(self.stream_id)
            except Exception:  # noqa: BLE001 - a store that does not answer has no one resuming through it
                reading = False
            if reading:
                last_seen = now
            elif now - last_seen >= grace:
                self.ending = ABANDONED
                pump.cancel()
                return
            await asyncio.sleep(max(min(step, last_seen + grace - now), MIN_WATCH_STEP))

    def stop(self) -> None:
        """The store's on_cancel (DELETE, on any instance): the stream ends with a `stream_cancelled` error
        event, which every reader, the client still attached included, gets before [DONE]."""
        self.end_with(stream_cancelled(), CANCELLED)

    def end_with(self, error: GatewayError, ending: str | None = None) -> None:
        """Cancels the upstream; the stream's last events are `error` and [DONE] (if it began)."""
        pump = self.pump
        if pump is None or pump.done():
            return
        self.ending = ending or self.ending
        if self.response is not None and self.committed:
            self.response.stopped_by = error
        pump.cancel()


class ResumableEventStream(EventStream):
    """The SSE response of a resumable stream: each event gets its `id:` line and goes to the store, and
    to the client while it is there; a client gone is not an error here, it is detached."""

    def __init__(self, relay: Relay, keepalive: float, send_timeout: float) -> None:
        super().__init__(keepalive, send_timeout)
        self._relay = relay

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        writer = await super().prepare(request)
        self._relay.committed = True
        return writer

    async def write_event(self, event: bytes) -> None:
        relay = self._relay
        relay.seq += 1
        framed = relay.id_prefix + str(relay.seq).encode() + b"\n" + event
        if relay.resumable:
            await relay.keep(relay.seq, framed)
        if relay.attached:
            try:
                await super().write_event(framed)
            except ConnectionResetError:
                relay.detach()

    async def write_events(self, events: list[bytes], at_once: bool = False) -> None:
        for event in events:  # each numbered and kept on its own
            await self.write_event(event)
        if at_once and self._relay.attached:
            try:
                await super().write_events([], at_once=True)
            except ConnectionResetError:
                self._relay.detach()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._relay.attached:
            try:
                await super().write_eof(data)
            except ConnectionResetError:
                self._relay.detach()
