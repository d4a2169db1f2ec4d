"""HTTP handlers: /v1 and /v2 chat and text completions, models, health."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

import aiohttp
import orjson
from aiohttp import web

from .auth import allowed_models, authenticate, authorize
from .body import read_body
from .config import Config
from .context import RequestContext
from . import failover
from .errors import GatewayError, invalid_param
from .keys import CONFIG, HEALTH, IN_FLIGHT, SESSION
from .logfmt import escape
from .metrics import METRICS
from .pipeline import Chain
from .responses import combine, encoder
from .routing import listed_models, resolve
from .sse import DONE_EVENT, EventStream, encode_event
from .validation import validate_chat, validate_completion

log = logging.getLogger("gateway")

_END = object()
SHUTTING_DOWN = GatewayError(503, "the gateway is shutting down: retry the request", type="service_unavailable",
                             code="server_shutting_down")


def error_response(error: GatewayError, request_id: str | None = None) -> web.Response:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return web.Response(status=error.status, body=error.to_json(), content_type="application/json", headers=headers)


async def _read_json(request: web.Request) -> object:
    server = request.app[CONFIG].server
    raw = await read_body(request, server.max_body_bytes, server.request_timeout)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_param(None, f"the request body is not valid JSON: {exc}", "invalid_json") from None


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _request_id(request: web.Request, own_id: str) -> str:
    """The id nginx (or the client) gave the request, so that logs line up; else the gateway's own."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.match(given) else own_id


def _context(config: Config, endpoint: str, body: dict, request_id: str) -> RequestContext:
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
        moderation=config.moderation,
    )


async def _complete(request: web.Request, endpoint: str, validate) -> web.StreamResponse:
    config = request.app[CONFIG]
    own_id = uuid.uuid4().hex  # unique per request, whatever id the client sent
    request_id = _request_id(request, own_id)
    key = None
    try:
        key = authenticate(request)
        body = validate(await _read_json(request))
        ctx = _context(config, endpoint, body, request_id)
        authorize(request, ctx, key)
    except GatewayError as error:
        request.app[METRICS].request(key and key.id, endpoint, error.code or str(error.status))
        return error_response(error, request_id)
    ctx.session = request.app[SESSION]
    started = time.monotonic()
    chain = Chain(ctx, failover.answer(ctx, request.app[SESSION], request.app[HEALTH]), config.middlewares)
    in_flight = request.app[IN_FLIGHT]
    task = asyncio.current_task()
    in_flight.tasks.add(task)
    outcome = "cancelled"
    try:
        if ctx.stream:
            response, outcome = await _stream(request, ctx, chain, config.server.sse_keepalive)
            return response
        try:
            answer = await combine(ctx, chain)
        except asyncio.CancelledError:
            if not in_flight.ending:
                raise
            task.uncancel()
            outcome = SHUTTING_DOWN.code
            return error_response(SHUTTING_DOWN, ctx.request_id)
        except Exception as exc:  # a GatewayError, or a bug: logged with its traceback, a 500 to the client
            error = _as_gateway_error(exc, ctx)
            outcome = error.code or str(error.status)
            return error_response(error, ctx.request_id)
        outcome = "ok"
        return web.Response(body=orjson.dumps(answer), content_type="application/json",
                            headers={"x-request-id": ctx.request_id, **ctx.response_headers})
    finally:
        in_flight.tasks.discard(task)
        await chain.aclose()
        request.app[METRICS].request(key and key.id, endpoint, outcome)
        log.info("request id=%s request_id=%s %s key=%s provider=%s model=%s stream=%s tries=%d outcome=%s "
                 "seconds=%.3f", own_id, ctx.request_id, endpoint, key.id if key else "-", ctx.provider.name,
                 escape(ctx.model), ctx.stream, ctx.attempts, outcome, time.monotonic() - started)


async def _stream(request: web.Request, ctx: RequestContext, chain: Chain,
                  keepalive: float) -> tuple[web.StreamResponse, str]:
    """Streams the chain as SSE. The first chunk is awaited before the 200 is committed, so that a failure
    before any content gets its real HTTP status; past `keepalive` seconds the 200 is committed anyway and
    keep-alive comments hold the connection while the provider thinks."""
    chunks = chain.output
    encode = encoder(ctx)
    first = asyncio.ensure_future(anext(chunks, _END))
    response: EventStream | None = None
    try:
        done, _ = await asyncio.wait((first,), timeout=keepalive)
        if not done:
            response = await _open(request, ctx, keepalive)
        try:
            chunk = await first
        except Exception as exc:
            error = _as_gateway_error(exc, ctx)
            if response is None:
                return error_response(error, ctx.request_id), error.code or str(error.status)
            return response, await _fail(response, error)
        if response is None:
            response = await _open(request, ctx, keepalive)
        try:
            if chunk is not _END:
                await response.write_event(encode(chunk))
                async for chunk in chunks:
                    await response.write_event(encode(chunk))
        except ConnectionResetError:
            raise
        except Exception as exc:
            return response, await _fail(response, _as_gateway_error(exc, ctx))
        await response.write_event(DONE_EVENT)
        await response.write_eof()
        return response, "ok"
    except ConnectionResetError:  # the client went away while we wrote, or did not read for send_timeout
        outcome = "client_too_slow" if response is not None and response.too_slow else "client_disconnected"
        return response or web.Response(status=499), outcome
    except asyncio.CancelledError:
        if response is not None and response.too_slow:  # dropped for send_timeout: its connection is gone
            asyncio.current_task().uncancel()
            return response, "client_too_slow"
        if not request.app[IN_FLIGHT].ending:
            raise  # the client went away: nothing to tell it
        asyncio.current_task().uncancel()
        if response is None:
            return error_response(SHUTTING_DOWN, ctx.request_id), SHUTTING_DOWN.code
        return response, await _fail(response, SHUTTING_DOWN)
    finally:
        if not first.done():
            first.cancel()
            await asyncio.wait((first,))
        if response is not None and response.prepared:
            response.stop_streaming()


def _as_gateway_error(exc: Exception, ctx: RequestContext) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    log.error("request %s failed inside the gateway", ctx.request_id, exc_info=exc)
    return GatewayError(500, "the gateway failed while answering this request", type="server_error",
                        code="internal_error")


async def _open(request: web.Request, ctx: RequestContext, keepalive: float) -> EventStream:
    response = EventStream(keepalive, request.app[CONFIG].server.send_timeout)
    response.headers["x-request-id"] = ctx.request_id
    response.headers.update(ctx.response_headers)
    await response.prepare(request)
    return response


async def _fail(response: EventStream, error: GatewayError) -> str:
    """Ends a stream that already began: the error as an event, then [DONE], so no client waits forever."""
    await response.write_event(encode_event(error.to_json()))
    await response.write_event(DONE_EVENT)
    await response.write_eof()
    return error.code or str(error.status)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "chat", validate_chat)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _complete(request, "completions", validate_completion)


async def models(request: web.Request) -> web.Response:
    try:
        key = authenticate(request)
    except GatewayError as error:
        return error_response(error)
    data = [{"id": model, "object": "model", "created": 0, "owned_by": owner}
            for model, owner in allowed_models(request, key, listed_models(request.app[CONFIG]))]
    return web.json_response({"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode())


async def healthz(request: web.Request) -> web.Response:
    if not request.query.get("verbose"):
        return web.json_response({"status": "ok"})
    config = request.app[CONFIG]
    health = request.app[HEALTH]
    providers = {
        p.name: {"kind": p.kind, "enabled": p.enabled, **({"missing_env": list(p.missing_env)} if p.missing_env else {}),
                 **health.report(p)}
        for p in config.providers.values()
    }
    return web.json_response({"status": "ok", "providers": providers, "runtime": _runtime(request.app)},
                             dumps=lambda o: orjson.dumps(o).decode())


def _runtime(app: web.Application) -> dict:
    """What a leak would show: requests in flight, upstream connections held, asyncio tasks alive."""
    connector = app[SESSION].connector
    return {
        "in_flight": len(app[IN_FLIGHT].tasks),
        "upstream_connections": len(getattr(connector, "_acquired", ())),  # checked out of the pool now
        "upstream_pooled": sum(len(idle) for idle in getattr(connector, "_conns", {}).values()),  # idle keep-alive
        "tasks": len(asyncio.all_tasks()),
    }


async def continue_after_auth(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue`: the key is checked before the client is told to send its body, so that a
    refused client never uploads it (aiohttp's default handler says "100 Continue" to anyone)."""
    try:
        authenticate(request)
    except GatewayError as error:
        return error_response(error)
    if request.version != aiohttp.HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(GatewayError(417, "the only Expect the gateway knows is '100-continue'",
                                           param="Expect", code="expectation_failed"))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response's size
    return None


def setup_routes(app: web.Application) -> None:
    for prefix in ("/v1", "/v2"):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions, expect_handler=continue_after_auth)
        app.router.add_post(f"{prefix}/completions", completions, expect_handler=continue_after_auth)
        app.router.add_get(f"{prefix}/models", models)
    app.router.add_get("/healthz", healthz)
