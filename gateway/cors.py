"""CORS for browsers on listed origins: preflights answered, the real responses' headers made readable.

Our own middleware and on_response_prepare hook rather than aiohttp-cors: that library has no
`Vary: Origin` (a cache between would hand one origin's answer to another), answers preflights with
200 instead of 204 and needs every route registered with it. The hook runs in `prepare()`, so that
SSE streams opened inside a handler, error responses and aiohttp's own 404/405 all get the headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping

from aiohttp import hdrs, web

from .config import CorsConfig
from .errors import GatewayError
from .routes import error_response

ALLOWED_METHODS = "GET, POST, OPTIONS"
STREAMS_PATH = "/v2/streams/"  # a resumable stream (gateway/resume/routes.py) may also be stopped: DELETE
ALLOWED_HEADERS = "Authorization, Content-Type, X-Request-Id, Last-Event-ID, X-Gateway-Resumable, X-Stream-Token"
# Listed one by one: Access-Control-Expose-Headers takes no pattern such as x-ratelimit-*.
EXPOSED_HEADERS = ", ".join((
    "x-request-id", "retry-after", "x-stream-id", "x-stream-token",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
))
CORS_CONFIG = web.AppKey("cors_config", CorsConfig)


def allowed_origin(cors: CorsConfig, origin: str | None) -> bool:
    return origin is not None and ("*" in cors.origins or origin.lower() in cors.origins)


def _add_vary_origin(headers: MutableMapping[str, str]) -> None:
    vary = headers.get(hdrs.VARY)
    if vary is None:
        headers[hdrs.VARY] = "Origin"
    elif "origin" not in vary.lower():
        headers[hdrs.VARY] = f"{vary}, Origin"


def _is_preflight(request: web.Request) -> bool:
    return (request.method == hdrs.METH_OPTIONS and hdrs.ORIGIN in request.headers
            and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers)


@web.middleware
async def cors_preflight(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Answers a preflight for any path before routing would turn it into a 405."""
    if not _is_preflight(request):
        return await handler(request)
    cors = request.app[CORS_CONFIG]
    method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].upper()
    streams = request.path.startswith(STREAMS_PATH)
    methods = ("GET", "POST", "HEAD", "DELETE") if streams else ("GET", "POST", "HEAD")
    if not allowed_origin(cors, request.headers[hdrs.ORIGIN]) or method not in methods:
        # No Access-Control-Allow-Origin on it: the browser refuses the real request.
        return error_response(GatewayError(403, "this origin may not call the gateway: list it in server.cors.origins",
                           type="permission_error", code="cors_origin_not_allowed"))
    return web.Response(status=204, headers={
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, DELETE, OPTIONS" if streams else ALLOWED_METHODS,
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOWED_HEADERS,
        hdrs.ACCESS_CONTROL_MAX_AGE: str(cors.max_age),
    })


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    cors = request.app[CORS_CONFIG]
    _add_vary_origin(response.headers)  # the answer depends on Origin, whether it is allowed or not
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not allowed_origin(cors, origin):
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    if not _is_preflight(request):
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS


def setup_cors(app: web.Application, cors: CorsConfig | None) -> None:
    """Off unless `server.cors` is configured: then no header changes and preflights get 405 as before."""
    if cors is None:
        return
    app[CORS_CONFIG] = cors
    app.middlewares.append(cors_preflight)
    app.on_response_prepare.append(_cors_headers)
