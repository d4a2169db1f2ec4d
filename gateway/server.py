"""How the app is served: aiohttp's server with a bound on the time request headers take, malformed
requests answered in OpenAI's error shape and logged in one line, and the `gateway serve` life cycle.

aiohttp bounds an idle connection (keepalive_timeout) but not one that sends its headers a byte at a
time, and its RequestHandler is built by its Server, which the AppRunner builds: so a runner, a server
and a handler of our own, used by `gateway serve` and by the tests (tests/conftest.py) alike.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError

from .access_log import begin_unparsed, finish
from .config import Config, listen_url
from .errors import GatewayError
from .appkeys import CONFIG
from .logfmt import escape

log = logging.getLogger("gateway.server")

# Seconds an idle keep-alive connection stays open; deploy/nginx/gateway.conf keeps its own below this,
# so that nginx never reuses a connection the gateway is closing.
KEEPALIVE_TIMEOUT = 75.0
_TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only


def server_options(config: Config) -> dict[str, Any]:
    """The keyword arguments of GatewayRunner: of aiohttp's runner, its Server and each connection's handler."""
    return {
        "handler_cancellation": True,  # a client that disconnects cancels its handler, which closes the upstream
        "access_log": None,  # the gateway logs one line per request itself (gateway/routes.py)
        "shutdown_timeout": config.server.shutdown_grace,
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        "header_timeout": config.server.request_timeout,
        "send_timeout": config.server.send_timeout,
    }


def parser_reason(exc: BaseException) -> str:
    """The first words of an HTTP parser error, without the bytes it quotes: those are the client's
    request line or headers, an Authorization value among them."""
    if not isinstance(exc, HttpProcessingError) and isinstance(exc.__cause__, HttpProcessingError):
        exc = exc.__cause__  # a body's framing error, passed on by the payload stream
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    first = next((line for line in str(text).splitlines() if line.strip()), "")
    return escape(first.split(":")[0].strip() or "invalid HTTP", 100)


def _raw_response(error: GatewayError, request_id: str) -> bytes:
    """A whole HTTP response, for a connection that has no request to answer through aiohttp."""
    body = error.to_json()
    head = (f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's handler of one connection, with a bound on the headers of each request: from the first
    byte that arrives while the connection waits for a request, the headers have `header_timeout`
    seconds to be complete; past it the client gets a 408, the connection is closed, and the request
    gets its access-log line like any other. The kernel aborts the connection when data it sent stays
    unacknowledged for `send_timeout` (TCP_USER_TIMEOUT, set once per connection: gateway/sse.py's
    EventStream would otherwise set and restore it on every stream)."""

    __slots__ = ("_app", "_header_timeout", "_header_timer", "_headers_since", "_send_timeout", "tcp_user_timeout_set")

    def __init__(self, manager: web.Server, *, app: web.Application, header_timeout: float, send_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._app = app
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._headers_since = 0.0  # time.monotonic() of the first byte of the headers awaited
        self._send_timeout = send_timeout
        self.tcp_user_timeout_set = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if _TCP_USER_TIMEOUT is not None and sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, _TCP_USER_TIMEOUT, int(self._send_timeout * 1000))
                self.tcp_user_timeout_set = True
            except OSError:  # the connection is already gone
                pass

    def _waiting_for_request(self) -> bool:
        # aiohttp's own test for an idle connection (RequestHandler._process_keepalive): start() awaits
        # this future until the parser hands it a request whose headers are complete.
        return self._waiter is not None and not self._waiter.done()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._waiting_for_request():  # a request's headers are complete, or a request is running
            self._stop_header_timer()
        elif data and self._header_timer is None:
            self._headers_since = time.monotonic()
            self._header_timer = self._loop.call_later(self._header_timeout, self._headers_timed_out)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport is None or not self._waiting_for_request():
            return
        record = begin_unparsed(self._peer_address(), self._headers_since)
        self.transport.write(_raw_response(GatewayError(
            408, f"the request headers did not arrive within {self._header_timeout:g} s", type="timeout_error",
            code="request_timeout"), record.request_id))
        self.force_close()  # close() flushes the 408 first
        record.status, record.outcome = 408, "request_timeout"
        finish(self._app, record)  # status=408 outcome=request_timeout: the access line says what happened

    def _peer(self) -> str:
        return escape(self._peer_address(), 100)

    def _peer_address(self) -> str:
        """The peer as an access record holds it: raw (the line's formatter escapes it)."""
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else peer or "-"

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """What aiohttp answers a request it could not parse (or one whose handler failed outside the
        middlewares): the OpenAI error shape, and one log line without the request's bytes (with, for a
        request that did not parse, its access-log line)."""
        record = None
        if isinstance(exc, HttpProcessingError):
            reason = parser_reason(exc)
            # non-HTTP traffic on a public port is noise: aiohttp logs it at debug too
            noise = isinstance(exc, BadHttpMethod) and self._request_count == 1
            log.log(logging.DEBUG if noise else logging.INFO, "malformed HTTP request from %s: %s", self._peer(),
                    reason)
            error = GatewayError(status, f"the request is not valid HTTP: {reason}", code="malformed_request")
            record = begin_unparsed(self._peer_address(), time.monotonic())  # it never reached the app's middlewares
            record.status, record.outcome = status, "malformed_request"
            finish(self._app, record, quiet=noise)
        elif status == 504:
            error = GatewayError(504, "the gateway timed out handling this request", type="timeout_error",
                                 code="timeout")
        else:
            log.error("request from %s failed outside its handler", self._peer(), exc_info=exc)
            error = GatewayError(status, "internal error in the gateway", type="server_error", code="internal_error")
        if request.writer.output_size > 0:  # as aiohttp: part of a response went out, the connection is broken
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = web.Response(status=status, body=error.to_json(), content_type="application/json")
        if record is not None:
            response.headers["X-Request-Id"] = record.request_id
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's Server of `app`, building a GatewayRequestHandler for each connection."""

    def __init__(self, base: web.Server, app: web.Application) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation, loop=base._loop, **base._kwargs)
        self.app = app

    def __call__(self) -> GatewayRequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, app=self.app, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """web.AppRunner with server_options(the app's config) and a GatewayServer."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **{**server_options(app[CONFIG]), **kwargs})

    async def _make_server(self) -> web.Server:
        return GatewayServer(await super()._make_server(), self.app)  # the app's startup runs in there


class ListenError(Exception):
    """The address cannot be served: in use, not on this host, unknown."""


def serve(app: web.Application, host: str, port: int, loop: asyncio.AbstractEventLoop | None = None,
          reuse_port: bool = False) -> None:
    """web.run_app's life cycle through GatewayRunner: serves until SIGINT or SIGTERM, then shuts down
    within server.shutdown_grace; a ListenError when the address cannot be listened on. `reuse_port`:
    a worker of `--workers`, sharing the port with the others (gateway/supervisor.py)."""
    loop = loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(app, host, port, reuse_port))
    finally:
        remaining = asyncio.all_tasks(loop)
        for task in remaining:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*remaining, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# Connections the kernel queues before the loop accepts them (capped by net.core.somaxconn). aiohttp's
# 128 overflows in a connection storm while the loop is busy: the dropped SYNs are retried by clients
# after 1, 3, 7, 15, 31 s, which is where the storm's seconds-long first tokens came from. SockSite is
# given it too: its own listen() call would set the queue back to 128.
LISTEN_BACKLOG = 4096


def _listen(host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Sockets listening on every address `host` names, opened before the app starts: an address that
    cannot be served fails here, with nothing started to undo."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in dict.fromkeys((info[0], info[4]) for info in infos):
            sockets.append(socket.create_server(address, family=family, backlog=LISTEN_BACKLOG, reuse_port=reuse_port))
    except (OSError, OverflowError) as exc:
        for sock in sockets:
            sock.close()
        # socket.create_server words its own errors: the system's message is what tells the operator why
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        raise ListenError(f"cannot listen on {listen_url(host, port).removeprefix('http://')}: {reason}") from None
    return sockets


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool = False) -> None:
    sockets = _listen(host, port, reuse_port)
    try:
        runner = GatewayRunner(app)
        await runner.setup()
        try:
            for sock in sockets:
                await web.SockSite(runner, sock, backlog=LISTEN_BACKLOG).start()
            settle_heap()
            log.info("listening on %s", listen_url(host, sockets[0].getsockname()[1]))
            await _until_signalled(app)
        finally:
            await runner.cleanup()
    finally:
        for sock in sockets:
            sock.close()


# Python's cycle collector runs by default every 700 allocations, and its full collections walk every
# object the process holds, the hundreds of thousands from start-up included. Measured under load (bench/
# compare.py), it took 8 to 13% of the gateway's CPU, and each full collection stopped the loop for about
# 50 ms (140 ms with 5,000 streams open). Reference counting frees almost everything a request makes: the
# collector is only for cycles. A young collection every 10,000 allocations (about 1.5% of the CPU), an
# older one every 20 of those, a full one every 100 of these (and, as always, only once the survivors
# have grown by a quarter).
GC_THRESHOLDS = (10_000, 20, 100)


def settle_heap() -> None:
    """Once serving starts: start-up's objects, which live as long as the process, are moved out of the
    collector's sight (gc.freeze; reference counting still frees them), and the collector runs less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _until_signalled(app: web.Application) -> None:
    """Serves until SIGINT or SIGTERM; each SIGHUP reloads the config file (gateway/reload.py)."""
    from .reload import reload

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: set[asyncio.Task[bool]] = set()

    def hangup() -> None:
        task = loop.create_task(reload(app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        for task in reloads:
            await asyncio.gather(task, return_exceptions=True)
