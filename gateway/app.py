"""The application factory and its lifecycle: one pooled ClientSession for every upstream call."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from .config import Config
from .errors import GatewayError
from .keys import CONFIG, SESSION
from .routes import error_response, setup_routes

log = logging.getLogger("gateway")


@web.middleware
async def openai_errors(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """aiohttp's own errors (404, 405, 413...) and unexpected failures, in OpenAI's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
        return error_response(GatewayError(exc.status, exc.reason, code=code))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(GatewayError(500, "internal error in the gateway", type="server_error",
                                           code="internal_error"))


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    # One pool for all providers. No connection cap: every live stream holds its own connection.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
    session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
    app[SESSION] = session
    yield
    await session.close()


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=[openai_errors])
    app[CONFIG] = config
    app.cleanup_ctx.append(_client_session)
    setup_routes(app)
    for provider in config.providers.values():
        if not provider.enabled:
            log.warning("provider %s disabled: set %s to enable it", provider.name, " and ".join(provider.missing_env))
    return app
