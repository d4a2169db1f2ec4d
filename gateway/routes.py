"""HTTP handlers: /v1 and /v2 chat and text completions, models (the probes: gateway/probes.py)."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from .access_log import CLIENT_DISCONNECTED, AccessRecord, begin, finish
from .auth import allowed_models, authenticate, authorize
from .body import read_body
from .config import Config
from .chunks import Batch
from .context import RequestContext
from . import failover
from .errors import GatewayError, invalid_param
from .appkeys import HEALTH, IN_FLIGHT, SESSION, generation
from .logfmt import FIELD_CAP
from .metrics import METRICS
from .pipeline import Chain
from .responses import combine, encoder
from .model_resolution import listed_models, resolve
from .provider_models import ProviderModels
from .resume.relay import open_relay, wants_resume
from .sse import DONE_EVENT, EventStream
from .validation import validate_chat, validate_completion

log = logging.getLogger("gateway")

_MODEL_SAFE = "/:@.-_+~=,;!*'()[]"  # a header value is printable ASCII: anything else is percent-encoded
CONTENT_FILTER = "content_filter"
SERVED_ENDPOINTS = ("POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models")


def shutting_down() -> GatewayError:
    return GatewayError(503, "the gateway is shutting down: retry the request", type="service_unavailable",
                        code="server_shutting_down")


def error_response(error: GatewayError, request_id: str | None = None) -> web.Response:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return web.Response(status=error.status, body=error.to_json(), content_type="application/json", headers=headers)


async def _read_json(request: web.Request) -> object:
    server = generation(request).config.server
    raw = await read_body(request, server.max_body_bytes, server.request_timeout)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_param(None, f"the request body is not valid JSON: {exc}", "invalid_json") from None


def _context(config: Config, endpoint: str, body: dict[str, Any], request_id: str) -> RequestContext:
    candidates = resolve(config, body["model"])  # every kind resolves to an adapter: config validation checked it
    provider, model = candidates[0]
    stream = bool(body.get("stream"))
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return RequestContext(
        endpoint=endpoint,
        body=body,
        provider=provider,
        model=model,
        requested_model=body["model"],
        stream=stream,
        include_usage=wants_usage or not stream,  # a combined answer always reports usage
        choices=body.get("n") or 1,
        request_id=request_id,
        candidates=candidates,
        settings=dict(config.settings),
    )


async def _complete(request: web.Request, endpoint: str,
                    validate: Callable[[Any], dict[str, Any]]) -> web.StreamResponse:
    config = generation(request).config
    record = begin(request)
    record.endpoint = endpoint
    key = None
    try:
        key = authenticate(request)
        record.key = key.id if key else None
        raw = await _read_json(request)
        model = raw.get("model") if isinstance(raw, dict) else None
        record.requested_model = model[:FIELD_CAP] if isinstance(model, str) else None
        body = validate(raw)
        record.stream = bool(body.get("stream"))
        ctx = _context(config, endpoint, body, record.request_id)
        authorize(request, ctx, key)
        relay = await open_relay(request, ctx, record) if ctx.stream and wants_resume(request, body, key) else None
    except GatewayError as error:
        record.outcome = error.code or str(error.status)
        return error_response(error, record.request_id)
    del raw, body  # the context holds the body until it is no longer needed (RequestContext.body)
    ctx.session = request.app[SESSION]
    first_target = (ctx.provider.name, ctx.model)
    chain = Chain(ctx, failover.answer(ctx, request.app[SESSION], request.app[HEALTH]), config.middlewares)
    in_flight = request.app[IN_FLIGHT]
    task = asyncio.current_task()
    assert task is not None
    in_flight.tasks.add(task)
    outcome = CLIENT_DISCONNECTED  # unless an ending below says otherwise: the handler was cancelled
    try:
        if ctx.stream:
            count_stream = request.app[METRICS].stream_count  # gateway_streams_in_flight
            count_stream(1)
            try:
                keepalive = config.server.sse_keepalive
                if relay is None:
                    response, outcome = await _stream(request, ctx, chain, keepalive, record)
                else:  # pumped by a task of its own, that goes on when the client leaves (gateway/resume)
                    response, outcome = await relay.run(
                        _stream(request, ctx, chain, keepalive, record, relay.event_stream), record)
            finally:
                count_stream(-1)
            return response
        try:
            answer = await combine(ctx, chain.output)
        except asyncio.CancelledError:
            if not in_flight.ending:
                raise
            task.uncancel()
            ending = shutting_down()
            outcome = ending.code or str(ending.status)
            return error_response(ending, ctx.request_id)
        except Exception as exc:  # a GatewayError, or a bug: logged with its traceback, a 500 to the client
            failure = _as_gateway_error(exc, ctx)
            outcome = failure.code or str(failure.status)
            return _tried(error_response(failure, ctx.request_id), ctx)
        outcome = "ok"
        for choice in answer["choices"]:
            _note_finish(record, choice.get("finish_reason"))
        record.chunks_out = 1
        headers = {"x-request-id": ctx.request_id, **ctx.response_headers}
        _name_server(headers, ctx)
        return web.Response(body=orjson.dumps(answer), content_type="application/json", headers=headers)
    finally:
        in_flight.tasks.discard(task)
        await chain.aclose()
        _settle_record(record, ctx, config, outcome, first_target)


def _count_sent(record: AccessRecord, batch: Batch) -> None:
    """Counted on the record, cheaply: the metrics get the totals at the end."""
    record.chunks_out += len(batch)
    for chunk in batch:
        choices = chunk.get("choices")
        if choices and choices[0].get("finish_reason"):
            _note_finish(record, choices[0]["finish_reason"])


def _may_end(batch: Batch) -> bool:
    """Whether the answer may end with this batch (a finish reason, or usage): then its events wait for
    the flush, to leave in one write with the [DONE] and the eof that usually follow at once."""
    return bool(batch[-1].get("usage")) or any(
        (choices := chunk.get("choices")) and choices[0].get("finish_reason") for chunk in batch)


def _note_finish(record: AccessRecord, reason: str | None) -> None:
    if reason and record.finish_reason != CONTENT_FILTER:  # with n > 1, a choice filtered marks the request
        record.finish_reason = reason


def _settle_record(record: AccessRecord, ctx: RequestContext, config: Config, outcome: str,
                   first_target: tuple[str, str]) -> None:
    """What the request's line says of its answer: who answered, how, and what moderation did."""
    record.provider, record.model = ctx.provider.name, ctx.model
    record.tries, record.retries = ctx.attempts, ctx.retries
    record.chunks_in = ctx.chunks_in
    record.upstream_first_bytes = ctx.upstream_first_bytes
    record.fallback = record.chunks_in > 0 and (ctx.provider.name, ctx.model) != first_target
    record.usage = ctx.usage
    moderated = config.moderation.active and "moderate" in config.middlewares
    if record.finish_reason == CONTENT_FILTER:
        outcome = CONTENT_FILTER if outcome == "ok" else outcome
        if moderated:
            record.moderation.append("output_block")
    elif outcome == CONTENT_FILTER and moderated:
        record.moderation.append("input_block")
    record.moderation.extend(ctx.moderation_actions)
    record.outcome = outcome


async def _stream(request: web.Request, ctx: RequestContext, chain: Chain, keepalive: float,
                  record: AccessRecord, make_response: Callable[[float, float], EventStream] = EventStream
                  ) -> tuple[web.StreamResponse, str]:
    """Streams the chain as SSE. The first chunk is awaited before the 200 is committed, so that a failure
    before any content gets its real HTTP status; past `keepalive` seconds the 200 is committed anyway and
    keep-alive comments hold the connection while the provider thinks. `make_response` makes the SSE
    response (a resumable stream's numbers and keeps its events).

    The first chunk is awaited in the handler's own task, with a loop timer for the commit: only a stream
    whose first chunk takes longer than `keepalive` gets a task, the one committing its 200 (prepare is
    async), and the handler waits for that task before it writes anything."""
    batches = chain.output
    encode = encoder(ctx)
    response: EventStream | None = None
    commit: list[asyncio.Task[EventStream]] = []  # the task committing the 200 once `keepalive` passed
    timer = asyncio.get_running_loop().call_later(keepalive, _commit, commit, request, ctx, keepalive, record,
                                                  make_response)
    try:
        try:
            batch = await anext(batches, None)  # None: the chain ended (a batch is never None)
        except Exception as exc:
            error = _as_gateway_error(exc, ctx)
            if not commit:
                return _tried(error_response(error, ctx.request_id), ctx), error.code or str(error.status)
            response = await commit[0]
            return response, await response.end_with_error(error)
        finally:
            timer.cancel()
            del timer  # a stream does not hold its cancelled handle for the rest of its life
        response = await commit[0] if commit else await _open(request, ctx, keepalive, record, make_response)
        try:
            if batch is not None:
                record.first_chunk = time.monotonic() - record.started
                await response.write_events([encode(chunk) for chunk in batch], at_once=not _may_end(batch))
                _count_sent(record, batch)
                del batch  # an idle stream holds no chunk while it waits for the next
                async for batch in batches:
                    await response.write_events([encode(chunk) for chunk in batch])
                    _count_sent(record, batch)
                    del batch
        except ConnectionResetError:
            raise
        except Exception as exc:
            return response, await response.end_with_error(_as_gateway_error(exc, ctx))
        await response.write_event(DONE_EVENT)
        await response.write_eof()
        return response, "ok"
    except ConnectionResetError:  # the client went away while we wrote, or did not read for send_timeout
        response = response or await _committed(commit)
        outcome = "client_too_slow" if response is not None and response.too_slow else "client_disconnected"
        return response or web.Response(status=499), outcome
    except asyncio.CancelledError:
        task = asyncio.current_task()
        assert task is not None
        response = response or await _committed(commit)
        if response is not None and response.too_slow:  # dropped for send_timeout: its connection is gone
            task.uncancel()
            return response, "client_too_slow"
        stopped_by = response.stopped_by if response is not None else None  # a resumable stream's DELETE
        if not request.app[IN_FLIGHT].ending and stopped_by is None:
            raise  # the client went away: nothing to tell it
        task.uncancel()
        error = stopped_by or shutting_down()
        if response is None:
            return error_response(error, ctx.request_id), error.code or str(error.status)
        return response, await response.end_with_error(error)
    finally:
        if response is None and commit:  # left before the 200 it was committing was known
            response = await _committed(commit)
        if response is not None:
            record.keepalives = getattr(response, "keepalives", 0)
            if response.prepared:
                response.stop_streaming()


def _commit(into: list[asyncio.Task[EventStream]], request: web.Request, ctx: RequestContext, keepalive: float,
            record: AccessRecord, make_response: Callable[[float, float], EventStream]) -> None:
    """`_stream`'s timer: the first chunk is late, the 200 is committed (in a task: prepare is async)."""
    into.append(asyncio.get_running_loop().create_task(_open(request, ctx, keepalive, record, make_response)))


async def _committed(commit: list[asyncio.Task[EventStream]]) -> EventStream | None:
    """The response a commit task opened, once it is done (it does not wait on anything in practice: aiohttp's
    prepare only buffers the headers); None when there was none, or it failed."""
    if not commit:
        return None
    opening = commit[0]
    if not opening.done():
        await asyncio.wait((opening,))
    if opening.cancelled() or opening.exception() is not None:
        return None
    return opening.result()


def _as_gateway_error(exc: Exception, ctx: RequestContext) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.error("request %s failed inside the gateway", ctx.request_id, exc_info=exc)
    return GatewayError(500, "the gateway failed while answering this request", type="server_error",
                        code="internal_error")


async def _open(request: web.Request, ctx: RequestContext, keepalive: float, record: AccessRecord,
                make_response: Callable[[float, float], EventStream]) -> EventStream:
    response = make_response(keepalive, generation(request).config.server.send_timeout)
    record.status = 200  # what the client got, whatever happens to the stream after
    headers = response.headers
    headers["x-request-id"] = ctx.request_id
    if ctx.response_headers:
        headers.update(ctx.response_headers)
    _name_server(headers, ctx)
    await response.prepare(request)
    return response


def _name_server(headers: MutableMapping[str, str], ctx: RequestContext) -> None:
    """Who answered, in the response's headers: for a route, the target that did (a stream committed before
    its first chunk names the target being tried then)."""
    headers["x-gateway-provider"] = ctx.provider.name
    headers["x-gateway-model"] = _quoted_model(ctx.model[:FIELD_CAP])  # capped first: the cache holds no long names


@functools.lru_cache(maxsize=256)  # the few models served, quoted once each
def _quoted_model(model: str) -> str:
    return quote(model, safe=_MODEL_SAFE)


def _tried(response: web.Response, ctx: RequestContext) -> web.Response:
    """A provider's failure names the provider that failed last, as an answer names the one that served it."""
    if ctx.attempts:
        _name_server(response.headers, ctx)
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "chat", validate_chat)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "completions", validate_completion)


async def models(request: web.Request) -> web.Response:
    record = begin(request)
    record.endpoint = "models"
    try:
        key = authenticate(request)
    except GatewayError as error:
        record.outcome = error.code
        return error_response(error, record.request_id)
    record.key = key.id if key else None
    config = generation(request).config
    listed = listed_models(config)
    at = len(listed) - len(config.routes)  # the providers' models, then the routes
    listed[at:at] = await request.app[PROVIDER_MODELS].listed(config, request.app[SESSION])
    data = [{"id": model, "object": "model", "created": 0, "owned_by": owner}
            for model, owner in allowed_models(request, key, listed)]
    return web.json_response({"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode())


async def continue_after_auth(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: the key is checked before the client is told to send its body, so that a
    refused client never uploads it (aiohttp's default handler says "100 Continue" to anyone)."""
    try:
        authenticate(request)
    except GatewayError as error:
        return _refused_before_middlewares(request, error)
    if request.version != aiohttp.HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        return _refused_before_middlewares(request, GatewayError(
            417, "the only Expect the gateway knows is '100-continue'", param="Expect", code="expectation_failed"))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response's size
    return None


def _refused_before_middlewares(request: web.Request, error: GatewayError) -> web.Response:
    """aiohttp runs an expect handler before the middlewares: its refusal writes its own access line."""
    record = begin(request)
    record.endpoint = "chat" if request.path.endswith("/chat/completions") else "completions"
    record.status, record.outcome = error.status, error.code or str(error.status)
    finish(request.app, record)
    return error_response(error, record.request_id)


PROVIDER_MODELS = web.AppKey("provider_models", ProviderModels)


def setup_routes(app: web.Application) -> None:
    app[PROVIDER_MODELS] = ProviderModels()
    for prefix in ("/v1", "/v2"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions, expect_handler=continue_after_auth)
        app.router.add_post(f"{prefix}/completions", completions, expect_handler=continue_after_auth)
        app.router.add_get(f"{prefix}/models", models)
    from .probes import setup_probes  # /healthz, /readyz, /admin/health
    from .resume.routes import setup_stream_routes  # GET and DELETE /v2/streams/{id}

    setup_probes(app)
    setup_stream_routes(app)
