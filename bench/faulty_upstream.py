"""A fake provider that misbehaves at random, for the soak: every request draws a fault.

Serves OpenAI's `POST /v1/chat/completions` and Anthropic's `POST /v1/messages`, always streaming
(the gateway streams upstream in both of its modes). Each request draws one fault from a seeded
generator, weighted by `--faults` (name=weight,...; the defaults are in FAULTS), among the faults
that exist in that wire format:

  ok                         a whole answer: content chunks, finish, usage, [DONE] (message_stop)
  http_500 ... http_529      that status with the provider's JSON error body
  http_429                   rate limited, with `retry-after: 1`
  reset_before_headers       the TCP connection dropped before any byte
  reset_mid_stream           dropped after some chunks
  hang_before_headers        nothing at all, until the gateway gives up
  hang_mid_stream            some chunks, then silence past the gateway's idle timeout
  malformed_line             a `data:` line that is not JSON inside an otherwise whole answer
  error_chunk                some chunks, then an error in the stream (OpenAI: a `data: {"error":...}`
                             chunk then [DONE]; Anthropic: `event: error` api_error)
  cut_final                  some chunks, then a clean end with no finish chunk and no [DONE]
                             (Anthropic: no message_delta, no message_stop)
  html_200                   an HTML error page with status 200
  giant_line                 some chunks, then one line longer than `--giant-bytes`
  overloaded_before_content  Anthropic only: message_start, then `event: error` overloaded_error

A request's messages may hold a tag `soak-<number>`: the faults drawn for it are kept, and
`GET /drawn` returns them ({tag: [fault, ...]}, several when the gateway retried). `GET /stats` says
what is open now: TCP connections, replies still being written, and replies the gateway closed
before they were complete (`cut_off`; deliberate resets are not counted).

Run alone: python bench/faulty_upstream.py --port 9000 [--seed 1] [--faults ok=10,reset_mid_stream=1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import signal
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from fake_upstream import DONE, SSE_HEADERS, TOKENS, OpenAIStream, include_usage

FAULTS = {  # name: default weight
    "ok": 40,
    "http_500": 2, "http_502": 2, "http_503": 2, "http_529": 2, "http_429": 3,
    "reset_before_headers": 3, "reset_mid_stream": 4,
    "hang_before_headers": 2, "hang_mid_stream": 2,
    "malformed_line": 4, "error_chunk": 3, "cut_final": 4,
    "html_200": 2, "giant_line": 2,
    "overloaded_before_content": 4,
}
ANTHROPIC_ONLY = frozenset({"overloaded_before_content"})
_TAG = re.compile(rb"soak-(\d+)")
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"


@dataclass
class Settings:
    weights: dict[str, float]
    seed: int
    max_chunks: int
    chunk_interval: float
    giant_bytes: int


@dataclass
class Stats:
    requests: int = 0
    replying: int = 0
    cut_off: int = 0
    faults: Counter = field(default_factory=Counter)
    drawn: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    server: web.Server | None = None  # the connections it holds are the open ones


SETTINGS = web.AppKey("settings", Settings)
STATS = web.AppKey("stats", Stats)
RNG = web.AppKey("rng", random.Random)


class _Reset(Exception):
    """The fault drops the connection itself: not a reply the gateway cut off."""


# ---------------------------------------------------------------- wire formats


class _OpenAIWire:
    def __init__(self, body: dict) -> None:
        self.stream = OpenAIStream(include_usage(body))

    def opening(self) -> list[bytes]:
        return [self.stream.role()]

    def content(self, i: int) -> bytes:
        return self.stream.content(i)

    def ending(self, count: int) -> list[bytes]:
        return self.stream.ending(count)

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-broken", "choices": [{"index": 0, "delta": {"content": "\n\n'

    def error_in_stream(self) -> list[bytes]:
        error = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                           "type": "server_error", "param": None, "code": None}}
        return [b"data: " + orjson.dumps(error) + b"\n\n", DONE]

    @staticmethod
    def error_body(status: int) -> bytes:
        kind, message = {
            429: ("requests", "Rate limit reached for gpt-4o-mini: please try again in 1s."),
            500: ("server_error", "The server had an error while processing your request. Sorry about that!"),
            502: ("server_error", "Bad gateway."),
            503: ("server_error", "The engine is currently overloaded, please try again later."),
            529: ("server_error", "The engine is currently overloaded, please try again later."),
        }[status]
        return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                       "code": "rate_limit_exceeded" if status == 429 else None}})


def _anthropic_event(payload: dict) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class _AnthropicWire:
    def __init__(self, body: dict) -> None:
        self.id = f"msg_{uuid.uuid4().hex[:24]}"

    def opening(self) -> list[bytes]:
        return [self.message_start(),
                _anthropic_event({"type": "content_block_start", "index": 0,
                                  "content_block": {"type": "text", "text": ""}}),
                _anthropic_event({"type": "ping"})]

    def message_start(self) -> bytes:
        return _anthropic_event({"type": "message_start", "message": {
            "model": ANTHROPIC_MODEL, "id": self.id, "type": "message", "role": "assistant", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 16, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": 1, "service_tier": "standard"}}})

    def content(self, i: int) -> bytes:
        return _anthropic_event({"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": TOKENS[i % len(TOKENS)]}})

    def ending(self, count: int) -> list[bytes]:
        return [_anthropic_event({"type": "content_block_stop", "index": 0}),
                _anthropic_event({"type": "message_delta",
                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": count}}),
                _anthropic_event({"type": "message_stop"})]

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":\n\n'

    def error_in_stream(self, kind: str = "api_error", message: str = "Internal server error") -> list[bytes]:
        return [_anthropic_event({"type": "error", "error": {"type": kind, "message": message}})]

    @staticmethod
    def error_body(status: int) -> bytes:
        kind, message = {
            429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            500: ("api_error", "Internal server error"),
            502: ("api_error", "Bad gateway"),
            503: ("api_error", "Service unavailable"),
            529: ("overloaded_error", "Overloaded"),
        }[status]
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


HTML_PAGE = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             b"</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n")


# ---------------------------------------------------------------- replies


def _draw(app: web.Application, anthropic: bool) -> str:
    weights = {name: w for name, w in app[SETTINGS].weights.items() if anthropic or name not in ANTHROPIC_ONLY}
    return app[RNG].choices(list(weights), weights=list(weights.values()))[0]


async def _hang() -> None:
    await asyncio.Event().wait()  # until the gateway closes the connection, which cancels this handler


def _reset(request: web.Request) -> None:
    request.transport.abort()
    raise _Reset


async def _reply(request: web.Request, wire, fault: str) -> web.StreamResponse:
    settings, rng = request.app[SETTINGS], request.app[RNG]
    if fault == "reset_before_headers":
        _reset(request)
    if fault == "hang_before_headers":
        await _hang()
    if fault.startswith("http_"):
        status = int(fault.removeprefix("http_"))
        headers = {"retry-after": "1"} if status == 429 else {}
        return web.Response(status=status, body=wire.error_body(status), content_type="application/json",
                            headers=headers)
    if fault == "html_200":
        return web.Response(status=200, body=HTML_PAGE, content_type="text/html")

    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    if fault == "overloaded_before_content":
        await response.write(wire.message_start())
        for event in wire.error_in_stream("overloaded_error", "Overloaded"):
            await response.write(event)
        await response.write_eof()
        return response
    count = rng.randint(1, settings.max_chunks)
    at = rng.randint(0, count)  # where a mid-stream fault strikes: after this many content chunks
    for event in wire.opening():
        await response.write(event)
    for i in range(count + 1):
        if i == at and await _strike(request, response, wire, fault):
            return response
        if i == count:
            break
        if settings.chunk_interval:
            await asyncio.sleep(settings.chunk_interval)
        await response.write(wire.content(i))
    for event in wire.ending(count):
        await response.write(event)
    await response.write_eof()
    return response


async def _strike(request: web.Request, response: web.StreamResponse, wire, fault: str) -> bool:
    """A mid-stream fault, at its place in the stream; True when the reply ends there."""
    if fault == "reset_mid_stream":
        _reset(request)
    elif fault == "hang_mid_stream":
        await _hang()
    elif fault == "malformed_line":
        await response.write(wire.malformed())
    elif fault == "giant_line":
        await response.write(b'data: {"filler": "')
        piece = b"x" * 16384
        for _ in range(request.app[SETTINGS].giant_bytes // len(piece) + 1):
            await response.write(piece)
        await response.write(b'"}\n\n')
    elif fault in ("error_chunk", "cut_final"):
        if fault == "error_chunk":
            for event in wire.error_in_stream():
                await response.write(event)
        await response.write_eof()
        return True
    return False


def _handler(wire_class, anthropic: bool):
    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        stats = request.app[STATS]
        fault = _draw(request.app, anthropic)
        stats.requests += 1
        stats.faults[fault] += 1
        tag = _TAG.search(raw)
        if tag:
            stats.drawn[tag.group(1).decode()].append(fault)
        stats.replying += 1
        try:
            return await _reply(request, wire_class(orjson.loads(raw)), fault)
        except _Reset:
            return web.Response()  # never sent: the transport is gone
        except (asyncio.CancelledError, ConnectionResetError):
            stats.cut_off += 1
            raise
        finally:
            stats.replying -= 1

    return handle


async def stats(request: web.Request) -> web.Response:
    s = request.app[STATS]
    return web.json_response({
        "requests": s.requests,
        "open_connections": len(s.server.connections) - 1,  # not counting this request's own
        "replying": s.replying,
        "cut_off": s.cut_off,
        "faults": dict(s.faults),
    })


async def drawn(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[STATS].drawn), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def parse_weights(text: str) -> dict[str, float]:
    """`name=weight,...` over the defaults; a name given alone gets weight 1, `all=0` clears the rest."""
    weights = dict(FAULTS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        weight = float(value) if value else 1.0
        if name == "all":
            weights = dict.fromkeys(FAULTS, weight)
        elif name in FAULTS:
            weights[name] = weight
        else:
            raise ValueError(f"unknown fault '{name}' (known: {', '.join(FAULTS)})")
        if weight < 0:
            raise ValueError(f"fault '{name}': a weight must be at least 0")
    if not any(w for name, w in weights.items() if name not in ANTHROPIC_ONLY):
        raise ValueError("every OpenAI fault has weight 0")
    return weights


def make_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[STATS] = Stats()
    app[RNG] = random.Random(settings.seed)
    app.router.add_post("/v1/chat/completions", _handler(_OpenAIWire, anthropic=False))
    app.router.add_post("/v1/messages", _handler(_AnthropicWire, anthropic=True))
    app.router.add_get("/stats", stats)
    app.router.add_get("/drawn", drawn)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(settings: Settings, port: int) -> None:
    app = make_app(settings)
    # handler_cancellation: a closed connection cancels its handler, so a hanging reply ends with it
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    app[STATS].server = runner.server
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default="", help="name=weight,... over the defaults (all=0 clears them)")
    parser.add_argument("--max-chunks", type=int, default=60, help="content chunks per answer: 1 to this many")
    parser.add_argument("--chunk-interval", type=float, default=0.005, help="seconds between content chunks")
    parser.add_argument("--giant-bytes", type=int, default=256 * 1024, help="the giant line's length")
    args = parser.parse_args()
    try:
        weights = parse_weights(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    settings = Settings(weights, args.seed, max(1, args.max_chunks), max(0.0, args.chunk_interval), args.giant_bytes)
    asyncio.run(serve(settings, args.port))


if __name__ == "__main__":
    main()
