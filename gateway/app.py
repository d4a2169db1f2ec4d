"""The application factory and its lifecycle: one pooled ClientSession for every upstream call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from . import eager_writes
from .config import Config
from .access_log import ACCESS, access_log
from .connector import UpstreamConnector
from .cors import setup_cors
from .errors import GatewayError
from .appkeys import CONFIG, HEALTH, IN_FLIGHT, SESSION, InFlight
from .logfmt import escape
from .metrics import ObservedHealth, setup_metrics
from .playground import setup_playground
from .redaction import redacting_logs
from .reload import setup_live
from .resume.service import setup_resume
from .shared_health import shared_health
from .routes import SERVED_ENDPOINTS, error_response, setup_routes

log = logging.getLogger("gateway")


@web.middleware
async def openai_errors(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413...) and unexpected failures, in OpenAI's error shape."""
    record = request[ACCESS]
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # HTTP requires it on a 405
        message = exc.reason
        if exc.status == 404 and request.path.startswith(("/v1/", "/v2/")):
            message = _unserved(request)
        record.outcome = record.outcome or code
        return error_response(GatewayError(exc.status, message, code=code, headers=allow), record.request_id)
    except Exception:
        log.exception("unhandled error on %s %s", escape(request.method, 20), escape(request.path))
        record.outcome = "internal_error"
        return error_response(GatewayError(500, "internal error in the gateway", type="server_error",
                                           code="internal_error"), record.request_id)


def _unserved(request: web.Request) -> str:
    """OpenAI's words for an unknown URL, and what this gateway serves instead."""
    served = ", ".join(SERVED_ENDPOINTS)
    return (f"Invalid URL ({escape(request.method, 20)} {escape(request.path, 100)}): this gateway serves "
            f"{served} (also under /v2)")


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    # One pool for all providers. No connection cap: every live stream holds its own connection. No
    # cookie jar: a cookie a provider set on one client's answer must not go out with the next client's
    # request (the session is shared by every client).
    connector = UpstreamConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
    session = aiohttp.ClientSession(connector=connector, raise_for_status=False,
                                    cookie_jar=aiohttp.DummyCookieJar())
    app[SESSION] = session
    uninstall = eager_writes.install(asyncio.get_running_loop())  # a request's body leaves in its own turn
    yield
    await session.close()
    uninstall()


async def _end_in_flight_at_grace(app: web.Application) -> None:
    """On SIGTERM: requests in flight may finish within the grace; a second before aiohttp would cut
    them, each is cancelled so that it ends with an error event (or a 503) instead of a dropped connection."""
    in_flight = app[IN_FLIGHT]
    grace = app[CONFIG].server.shutdown_grace
    log.info("shutting down: %d request(s) in flight get up to %.0f s", len(in_flight.tasks), grace)

    async def end() -> None:
        await asyncio.sleep(max(grace - 1.0, 0.0))
        in_flight.ending = True
        for task in list(in_flight.tasks):
            task.cancel()

    if in_flight.tasks:
        in_flight.timer = asyncio.create_task(end())


async def _stop_timer(app: web.Application) -> None:
    timer = app[IN_FLIGHT].timer
    if timer is not None:
        timer.cancel()


def create_app(config: Config) -> web.Application:
    # auto_decompress off: gateway/body.py inflates request bodies itself, capped as it goes, and only once the
    # key is known; aiohttp's parser would inflate each body in full as it arrives
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[access_log, openai_errors],
                          handler_args={"auto_decompress": False})
    app[CONFIG] = config
    app[IN_FLIGHT] = InFlight()
    metrics = setup_metrics(app, config)
    app[HEALTH] = ObservedHealth(metrics)
    app.cleanup_ctx.append(redacting_logs(config))  # first in, last out: covers every other start and stop
    app.cleanup_ctx.append(_client_session)
    app.on_shutdown.append(_end_in_flight_at_grace)
    app.on_cleanup.append(_stop_timer)
    setup_routes(app)
    setup_playground(app, config.server)
    setup_cors(app, config.server.cors)
    setup_live(app, config)
    setup_resume(app, config.resume)  # after the session: its streams end before the session closes
    # with limits.backend: redis, every instance skips a provider that one of them found failing
    app.cleanup_ctx.append(shared_health())  # follows reloads: on and off with the live backend
    disabled = [f"{p.name} ({' and '.join(p.missing_env)})" for p in config.providers.values() if not p.enabled]
    if disabled:  # one line: the shipped config names many providers, most without their key
        log.warning("%d provider(s) disabled until their variables are set: %s", len(disabled), ", ".join(disabled))
    return app
