"""A scriptable fake provider: a real aiohttp server on loopback that plays back exact wire bytes.

Each request takes the next `Reply` from the queue (or the default one). A reply is a status, headers
and a list of steps: bytes to write (each write flushed on its own, so the gateway sees the splits),
`Wait(event)` to hold the stream until the test says so, `Sleep(seconds)`, `HANG` to never finish,
or `RESET` to drop the connection.
The fake records every request it got and counts connections that were closed on it mid-reply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import orjson
from aiohttp import web


@dataclass
class Wait:
    event: asyncio.Event


@dataclass
class Sleep:
    seconds: float


HANG = object()
RESET = object()  # drop the TCP connection abruptly, mid-reply


@dataclass
class Reply:
    steps: list = field(default_factory=list)
    status: int = 200
    headers: dict = field(default_factory=lambda: {"Content-Type": "text/event-stream; charset=utf-8"})
    before_headers: object = None  # HANG or RESET: misbehave before any header is sent


@dataclass
class Received:
    path: str
    headers: dict
    body: dict


def split_at(data: bytes, size: int) -> list[bytes]:
    """Writes of `size` bytes: cuts lines, JSON and multi-byte characters at awkward places."""
    return [data[i:i + size] for i in range(0, len(data), size)]


class FakeUpstream:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        self.received: list[Received] = []
        self.cut_off = 0  # replies the gateway closed before they were complete
        self.cut_off_event = asyncio.Event()
        self.active = 0
        self.bytes_written = 0  # reply bytes written, over all replies
        self.completed = 0  # replies written to their end
        self._live: list[web.Request] = []  # requests whose reply is being written
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self._handle)

    def writing_paused(self) -> bool:
        """A reply is held back: its connection's write buffer is full because the gateway does not read."""
        return any(r.protocol is not None and r.protocol.writing_paused for r in self._live)

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def stream(self, data: bytes, *, split: int | None = None, **kwargs) -> None:
        """Queues one 200 SSE reply of `data`, written whole or in `split`-byte pieces."""
        self.queue(Reply(steps=split_at(data, split) if split else [data], **kwargs))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.received.append(Received(request.path_qs, dict(request.headers), orjson.loads(raw) if raw else {}))
        reply = self.replies.popleft() if self.replies else self.default
        assert reply is not None, "the fake upstream got a request it had no reply for"
        self.active += 1
        self._live.append(request)
        try:
            if reply.before_headers is HANG:
                await asyncio.Event().wait()
            if reply.before_headers is RESET:
                request.transport.abort()
                return web.Response()
            if reply.status != 200 or not reply.steps:
                body = b"".join(s for s in reply.steps if isinstance(s, bytes))
                return web.Response(status=reply.status, body=body, headers=reply.headers)
            response = web.StreamResponse(status=reply.status, headers=reply.headers)
            await response.prepare(request)
            for step in reply.steps:
                if isinstance(step, Wait):
                    await step.event.wait()
                elif isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                elif step is HANG:
                    await asyncio.Event().wait()
                elif step is RESET:
                    request.transport.abort()
                    return response
                else:
                    await response.write(step)
                    self.bytes_written += len(step)
                    await asyncio.sleep(0)  # let each write leave as its own segment
            await response.write_eof()
            self.completed += 1
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.cut_off += 1
            self.cut_off_event.set()
            raise
        finally:
            self.active -= 1
            self._live.remove(request)


def sse(*payloads: object, done: bool = True, event: str | None = None) -> bytes:
    """OpenAI's framing: `data: <json>` and a blank line per chunk, then `data: [DONE]`."""
    out = bytearray()
    for payload in payloads:
        if event:
            out += f"event: {event}\n".encode()
        out += b"data: " + (payload if isinstance(payload, bytes) else orjson.dumps(payload)) + b"\n\n"
    if done:
        out += b"data: [DONE]\n\n"
    return bytes(out)


def chat_chunk(delta: dict | None = None, finish_reason: str | None = None, *, index: int = 0,
               id: str = "chatcmpl-fake1", model: str = "gpt-4o-mini-2024-07-18", created: int = 1782955817,
               usage: dict | None = None, choices: list | None = None) -> dict:
    """A chunk with OpenAI's field order, as in the recordings."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_d0469e1700",
        "choices": choices if choices is not None else [
            {"index": index, "delta": delta if delta is not None else {}, "logprobs": None,
             "finish_reason": finish_reason}
        ],
        "usage": usage,
    }


class RawUpstream:
    """An HTTP/1.1 server written by hand on a raw socket, for framing that no server library sends.

    Each request, on whichever connection, gets the next script: byte strings written one by one (a
    short pause after each, so that each reaches the gateway in its own read); after its last piece the
    connection stays open (keep-alive) for the next request, or until the gateway closes it. `requests`
    holds, for each request, its number on its connection (1 for a new connection, 2 for the first reuse).
    """

    PAUSE = 0.05  # seconds between pieces: pacing, so that the gateway reads them apart

    def __init__(self, *scripts: list[bytes]) -> None:
        self.scripts = deque(scripts)
        self.requests: list[int] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = "http://127.0.0.1:%d" % self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        on_this_connection = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                on_this_connection += 1
                self.requests.append(on_this_connection)
                for piece in self.scripts.popleft():
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(self.PAUSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway closed the connection
        finally:
            writer.close()


def chunked(*pieces: bytes) -> bytes:
    """Pieces of a body in HTTP/1.1 chunked framing (without the terminating chunk)."""
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


def raw_head(status: int = 200, content_type: str = "text/event-stream") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: keep-alive\r\n\r\n").encode()
