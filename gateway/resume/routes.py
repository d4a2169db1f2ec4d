"""GET /v2/streams/{id}: a resumable stream read again, from the event after the client's last one, then
live to its end; DELETE /v2/streams/{id}: stops it. The README's "Resumable streams" is the protocol.

Only the key that started a stream, or the stream's token (`?token=` or X-Stream-Token, for EventSource,
which cannot send Authorization), may read or stop it. Any other caller is told 404, as for a stream that
never was, so that nobody learns which ids exist.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import AsyncGenerator

from aiohttp import web

from ..access_log import CLIENT_DISCONNECTED, begin
from ..appkeys import IN_FLIGHT, generation
from ..auth import authenticate
from ..errors import GatewayError, invalid_param
from ..routes import error_response, shutting_down
from ..sse import EventStream
from .relay import STREAM_ID_HEADER, STREAM_TOKEN_HEADER, token_digest
from .service import RESUME, Resumes
from .store import OwnerLost, ResumeStore, StreamExpired, StreamMeta

_STREAM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SEQ = re.compile(r"^[0-9]{1,15}$")
_END = object()
LAST_EVENT_ID = "Last-Event-ID"
# seconds a resume waits for its first event before its 200: stored events and an expired stream are known
# at once; past this there is nothing new yet, and keep-alives hold the connection until there is
COMMIT_WAIT = 1.0


def not_found() -> GatewayError:
    return GatewayError(404, "no such stream: it never existed, or it was forgotten, or it is not yours (a stream is "
                        "read with the key that started it, or with its token)", code="stream_not_found")


def expired() -> GatewayError:
    return GatewayError(410, "the stream is no longer resumable: nobody resumed it within its grace period, it "
                        "outgrew the resume buffer, or it ended too long ago", code="stream_expired")


def owner_lost() -> GatewayError:
    return GatewayError(502, "the instance reading this stream's upstream stopped before the stream ended",
                        type="upstream_error", code="upstream_owner_lost")


def unavailable() -> GatewayError:
    return GatewayError(503, "resumable streams are unavailable now: retry", type="service_unavailable",
                        code="resume_unavailable")


async def _authorized(request: web.Request, store: ResumeStore) -> StreamMeta:
    stream_id = request.match_info["id"]
    token = request.query.get("token") or request.headers.get(STREAM_TOKEN_HEADER)
    key = authenticate(request) if token is None else None  # a 401 for a missing or wrong key, as anywhere
    if not _STREAM_ID.match(stream_id):
        raise not_found()
    try:
        meta = await store.meta(stream_id)
    except Exception:  # noqa: BLE001 - the backend's failure, whatever its kind
        raise unavailable() from None
    if meta is None:
        raise not_found()
    if token is not None:
        if not hmac.compare_digest(token_digest(token), meta.token_sha256):
            raise not_found()
    elif key is None or meta.key_id != key.id:
        raise not_found()
    return meta


def _after(request: web.Request, stream_id: str) -> int:
    """The last event the client has: Last-Event-ID (`<stream id>.<seq>`, as EventSource sends it back),
    else ?after=<seq>, else 0 (the whole stream)."""
    last = request.headers.get(LAST_EVENT_ID, "").strip()
    if last:
        owner, dot, seq = last.rpartition(".")
        if dot and owner != stream_id:
            raise invalid_param(LAST_EVENT_ID, f"{LAST_EVENT_ID} names an event of another stream",
                                "invalid_last_event_id")
        if not _SEQ.match(seq):
            raise invalid_param(LAST_EVENT_ID, f"{LAST_EVENT_ID} must be <stream id>.<number>", "invalid_last_event_id")
        return int(seq)
    after = request.query.get("after")
    if after is None:
        return 0
    if not _SEQ.match(after):
        raise invalid_param("after", "'after' must be the number of the last event received", "invalid_value")
    return int(after)


async def read_stream(request: web.Request) -> web.StreamResponse:
    record = begin(request)
    record.endpoint, record.stream = "streams", True
    resumes = request.app[RESUME]
    try:
        meta = await _authorized(request, resumes.store)
        after = _after(request, meta.stream_id)
    except GatewayError as error:
        record.outcome = error.code or str(error.status)
        return error_response(error, record.request_id)
    record.key, record.stream_id = meta.key_id, meta.stream_id
    in_flight = request.app[IN_FLIGHT]
    task = asyncio.current_task()
    assert task is not None
    in_flight.tasks.add(task)
    try:
        response, record.outcome = await _replay(request, resumes, meta.stream_id, after, record.request_id)
    finally:
        in_flight.tasks.discard(task)
    if isinstance(response, EventStream):
        record.keepalives = response.keepalives
    return response


async def _replay(request: web.Request, resumes: Resumes, stream_id: str, after: int,
                  request_id: str) -> tuple[web.StreamResponse, str]:
    """The stored events after `after`, then the live ones, as they were first sent. The first is awaited
    (up to COMMIT_WAIT) before the 200, so that an expired stream is a 410; a finished stream with nothing
    after `after` is a 204 (for EventSource: stop reconnecting)."""
    record = begin(request)
    server = generation(request).config.server
    events = resumes.store.events(stream_id, after)
    first = asyncio.ensure_future(anext(events, _END))
    response: EventStream | None = None
    try:
        done, _ = await asyncio.wait((first,), timeout=min(COMMIT_WAIT, server.sse_keepalive))
        try:
            if not done:
                response = await _open(request, stream_id, server.sse_keepalive, server.send_timeout, request_id)
            item = await first
            if item is _END and response is None:
                return web.Response(status=204, headers={STREAM_ID_HEADER: stream_id}), "ok"
            if response is None:
                response = await _open(request, stream_id, server.sse_keepalive, server.send_timeout, request_id)
            if isinstance(item, tuple):
                await response.write_event(item[1])
                record.chunks_out += 1
                async for _seq, event in events:
                    await response.write_event(event)
                    record.chunks_out += 1
        except (StreamExpired, OwnerLost) as exc:
            error = expired() if isinstance(exc, StreamExpired) else owner_lost()
            if response is None:
                return error_response(error, request_id), error.code or str(error.status)
            return response, await response.end_with_error(error)
        except ConnectionResetError:
            raise
        except Exception:  # noqa: BLE001 - the store failed under a stream begun: say so, never cut it silently
            error = unavailable()
            if response is None:
                return error_response(error, request_id), error.code or str(error.status)
            return response, await response.end_with_error(error)
        await response.write_eof()
        return response, "ok"
    except ConnectionResetError:
        return response or web.Response(status=499), CLIENT_DISCONNECTED
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if response is None or not request.app[IN_FLIGHT].ending or task is None:
            raise  # the client went away: nothing to tell it
        task.uncancel()
        return response, await response.end_with_error(shutting_down())
    finally:
        if not first.done():
            first.cancel()
            await asyncio.wait((first,))
        if isinstance(events, AsyncGenerator):  # the Protocol says AsyncIterator; the stores' are generators
            await events.aclose()
        if response is not None and response.prepared:
            response.stop_streaming()


async def _open(request: web.Request, stream_id: str, keepalive: float, send_timeout: float,
                request_id: str) -> EventStream:
    # a plain EventStream: the replayed events are written as stored, and an error it ends with
    # (end_with_error) gets no id, not being one of the stream's events
    response = EventStream(keepalive, send_timeout)
    response.headers["x-request-id"] = request_id
    response.headers[STREAM_ID_HEADER] = stream_id
    begin(request).status = 200
    await response.prepare(request)
    return response


async def stop_stream(request: web.Request) -> web.Response:
    """Cancels the upstream wherever it is read; readers get a `stream_cancelled` error event, then [DONE]."""
    record = begin(request)
    record.endpoint = "streams"
    store = request.app[RESUME].store
    try:
        meta = await _authorized(request, store)
        record.key, record.stream_id = meta.key_id, meta.stream_id
        try:
            known = await store.cancel(meta.stream_id)
        except Exception:  # noqa: BLE001 - the backend's failure, whatever its kind
            raise unavailable() from None
        if not known:
            raise expired()
    except GatewayError as error:
        record.outcome = error.code or str(error.status)
        return error_response(error, record.request_id)
    return web.Response(status=204, headers={"x-request-id": record.request_id})


def setup_stream_routes(app: web.Application) -> None:
    app.router.add_get("/v2/streams/{id}", read_stream)
    app.router.add_delete("/v2/streams/{id}", stop_stream)
