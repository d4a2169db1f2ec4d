"""A lean SSE load generator for bench/compare.py: raw HTTP/1.1 over asyncio protocols, no client library.

A load generator that costs less per chunk than the servers it drives leaves the mock and itself room on
their shared core, and one that costs little per connection can hold 10,000 streams open. Each response
is decoded just enough to count its SSE events, time its first content chunk and check its ending;
responses marked `validate` are kept whole and checked event by event against the text the mock sends.

Two drivers: `closed_loop` (workers, each streaming one request after another on a kept-alive
connection) and `ramp` (one connection per stream, the streams started evenly over a span of time).
Both are bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import orjson

from fake_upstream import TOKENS

OPENAI_DONE = b"data: [DONE]\n\n"
# What ends one event on each wire: JSON holds no raw newline, so each of these ends exactly one event.
# "openai-no-done": OpenAI's chunks without the closing [DONE] (Portkey's answer for a Google upstream).
SEPARATORS = {"openai": b"\n\n", "openai-no-done": b"\n\n", "anthropic": b"\n\n", "gemini": b"\r\n\r\n"}
# Where a stream has no end event, the event with its finish reason shows that it was complete.
FINISH_MARKERS = {"gemini": b'"finishReason"', "openai-no-done": b'"finish_reason":"'}
MAX_HEAD_BYTES = 65536
ERROR_BODY_BYTES = 600


@dataclass(frozen=True)
class Target:
    """One endpoint to stream from: where, what to send, and which wire format comes back."""
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    wire: str = "openai"  # the answer's format: one of SEPARATORS' keys

    def request(self) -> bytes:
        extra = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        return (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(self.body)}\r\n{extra}\r\n").encode() + self.body


class StreamFailed(Exception):
    pass


def expected_text(content_chunks: int) -> str:
    return "".join(TOKENS[i % len(TOKENS)] for i in range(content_chunks))


def _payloads(body: bytes) -> list[tuple[bytes, bytes]]:
    """(event name, data) of each SSE event in a whole body."""
    events = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = b"", []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
        if data:
            events.append((name, b"\n".join(data)))
    return events


def _content_of(data: bytes, wire: str) -> str:
    """The text one event's data carries ('' when none)."""
    if not data.startswith(b"{"):
        return ""
    payload = orjson.loads(data)
    if wire == "anthropic":
        delta = payload.get("delta") if payload.get("type") == "content_block_delta" else None
        return delta.get("text", "") if isinstance(delta, dict) and delta.get("type") == "text_delta" else ""
    if wire == "gemini":
        return "".join(part["text"] for candidate in payload.get("candidates") or ()
                       for part in ((candidate.get("content") or {}).get("parts") or ())
                       if isinstance(part.get("text"), str) and not part.get("thought"))
    text = []
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            text.append(delta["content"])
    return "".join(text)


def check_whole(body: bytes, wire: str, content_chunks: int) -> None:
    """Every event parses, the text is exactly what the mock sent, and the stream ends as its format ends."""
    try:
        _check_whole(body, wire, content_chunks)
    except (ValueError, TypeError, AttributeError) as exc:  # JSON that is not, or not shaped as the format's
        raise StreamFailed(f"an event does not parse as {wire}: {exc}") from None


def _check_whole(body: bytes, wire: str, content_chunks: int) -> None:
    events = _payloads(bytes(body))
    if not events:
        raise StreamFailed("no event")
    text = "".join(_content_of(data, wire) for _, data in events if data != b"[DONE]")
    if text != expected_text(content_chunks):
        raise StreamFailed(f"the text differs from the mock's: {text[:80]!r}...")
    if not bytes(body[-4:]).endswith(SEPARATORS[wire]):
        raise StreamFailed(f"the body does not end with a whole event: {bytes(body[-80:])!r}")
    last_name, last_data = events[-1]
    if wire == "anthropic" and last_name != b"message_stop":
        raise StreamFailed(f"the last event is {last_name!r}, not message_stop")
    if wire == "openai" and last_data != b"[DONE]":
        raise StreamFailed(f"the last event is {last_data[:80]!r}, not [DONE]")
    if wire == "openai-no-done" and not any(c.get("finish_reason") for _, data in events
                                            for c in orjson.loads(data).get("choices") or ()):
        raise StreamFailed("no chunk has a finish_reason")
    if wire == "gemini":
        if any(name for name, _ in events) or b"[DONE]" in (data for _, data in events):
            raise StreamFailed("Gemini's stream has no event: lines and no [DONE]")
        finishes = [i for i, (_, data) in enumerate(events)
                    if any(c.get("finishReason") for c in orjson.loads(data).get("candidates") or ())]
        if finishes != [len(events) - 1]:
            raise StreamFailed(f"finishReason is on events {finishes}, not on the last one only")


class Response:
    """One response being received: HTTP head, then a chunked, sized or close-delimited SSE body."""

    def __init__(self, started: float, wire: str, keep_body: bool) -> None:
        self.started = started
        self.wire = wire
        self.separator = SEPARATORS[wire]
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head = b""
        self.status = 0
        self.in_body = False
        self.chunked = False
        self.length: int | None = None  # bytes of body left when the answer is sized
        self.keep_alive = True
        self.chunk_left = 0
        self.crlf_left = 0
        self.size_line = b""
        self.events = 0
        self.tail = b""  # the body's last 64 bytes
        self.finish_marker = FINISH_MARKERS.get(wire)
        self.finish_event = -1  # with a finish marker: the index of the last event seen carrying it
        self.first_token: float | None = None
        self.unscanned = b""  # until the first content chunk: bytes not yet split into events
        self.body = bytearray() if keep_body else None
        self.error_body = b""
        self.on_first_token: Callable[[], None] | None = None

    # ---- receiving

    def feed(self, data: bytes) -> bytes:
        """Takes what belongs to this response; returns the bytes past its end (none on these servers)."""
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > MAX_HEAD_BYTES:
                    self._fail("response head too large")
                return b""
            data = self._parse_head(self.head[:end].lstrip(b"\r\n"))
            data, self.head = self.head[end + 4:], b""
            self.in_body = True
        if self.chunked:
            return self._dechunk(data)
        if self.length is not None:
            piece, rest = data[:self.length], data[self.length:]
            self.length -= len(piece)
            self._body(piece)
            if self.length == 0:
                self._finish()
            return rest
        self._body(data)  # until the connection closes
        return b""

    def _parse_head(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        try:
            self.status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            self._fail(f"bad status line {lines[0][:80]!r}")
            return b""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"transfer-encoding" and b"chunked" in value:
                self.chunked = True
            elif name == b"content-length":
                self.length = int(value)
            elif name == b"connection" and value == b"close":
                self.keep_alive = False
        if not self.chunked and self.length is None:
            self.keep_alive = False
        return b""

    def _dechunk(self, data: bytes) -> bytes:
        pos, end = 0, len(data)
        while pos < end and not self.done.done():
            if self.chunk_left:
                take = min(self.chunk_left, end - pos)
                self._body(data[pos:pos + take])
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.crlf_left = 2
            elif self.crlf_left:
                take = min(self.crlf_left, end - pos)
                pos += take
                self.crlf_left -= take
            elif self.size_line.endswith(b"\r") and data[pos] == 10:  # the size line's CRLF split in two
                line, self.size_line = self.size_line[:-1], b""
                pos += 1
                if self._chunk_size(line):
                    return data[pos:]
            else:
                line_end = data.find(b"\r\n", pos)
                if line_end < 0:
                    self.size_line += data[pos:]
                    return b""
                line, self.size_line = self.size_line + data[pos:line_end], b""
                pos = line_end + 2
                if self._chunk_size(line):
                    return data[pos:]
        return data[pos:]

    def _chunk_size(self, line: bytes) -> bool:
        """Reads one chunk-size line; returns whether it was the last chunk's."""
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:  # the last chunk; its closing blank line is skipped with the next head
            self._finish()
            return True
        self.chunk_left = size
        return False

    def _body(self, piece: bytes) -> None:
        if not piece:
            return
        if self.status != 200:
            self.error_body = (self.error_body + piece)[:ERROR_BODY_BYTES]
            return
        # Separators, those split across two pieces too, without copying the pieces: the separator is at
        # most 4 bytes, so one that straddles lies within the last 3 bytes before and the first 3 of the piece.
        sep, reach = self.separator, len(self.separator) - 1
        seam = self.tail[-reach:] + piece[:reach]
        before = self.events + seam.count(sep)
        if self.finish_marker is not None:
            self._find_finish(piece, before)
        self.events = before + piece.count(sep)
        self.tail = (self.tail + piece[-64:])[-64:]
        if self.body is not None:
            self.body += piece
        if self.first_token is None:
            *complete, self.unscanned = (self.unscanned + piece).split(sep)
            for event in complete:
                if self._has_content(event):
                    self.first_token = time.perf_counter() - self.started
                    self.unscanned = b""
                    if self.on_first_token is not None:
                        self.on_first_token()
                    break

    def _find_finish(self, piece: bytes, before: int) -> None:
        """Notes which event a finish reason is in (`before`: the events ended before this piece's first byte)."""
        marker = self.finish_marker
        assert marker is not None
        at = piece.rfind(marker)
        if at >= 0:
            self.finish_event = before + piece.count(self.separator, 0, at)
        elif marker in self.tail[1 - len(marker):] + piece[:len(marker) - 1]:  # split across the two pieces
            self.finish_event = before

    def _has_content(self, event: bytes) -> bool:
        if b"text_delta" not in event and b'"content"' not in event and b'"text"' not in event:
            return False
        return any(_content_of(data, self.wire) for _, data in _payloads(event))

    def _finish(self) -> None:
        if self.done.done():
            return
        if self.status != 200:
            self._fail(f"HTTP {self.status}: {self.error_body.decode(errors='replace')}")
        elif self.first_token is None:
            self._fail("no chunk had content")
        elif self.wire == "anthropic" and (b"message_stop" not in self.tail or not self.tail.endswith(b"\n\n")):
            self._fail(f"the stream did not end with message_stop (its end: {self.tail!r})")
        elif self.wire == "openai" and not self.tail.endswith(OPENAI_DONE):
            self._fail(f"the stream did not end with [DONE] (its end: {self.tail!r})")
        elif self.wire == "gemini" and (self.finish_event != self.events - 1 or not self.tail.endswith(b"\r\n\r\n")):
            self._fail(f"the last event did not carry the finishReason (its end: {self.tail!r})")
        elif self.wire == "openai-no-done" and (self.finish_event < 0 or not self.tail.endswith(b"\n\n")):
            self._fail(f"no chunk had a finish_reason, or the last is cut (its end: {self.tail!r})")
        else:
            self.done.set_result(None)

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(StreamFailed(why))
            # marked as retrieved: a stream its waiter gave up on (timed out) fails later with no reader, and
            # asyncio would print "Future exception was never retrieved" for each
            self.done.exception()

    def connection_lost(self) -> None:
        if self.in_body and not self.chunked and self.length is None:
            self._finish()  # a close-delimited body ends here
        else:
            self._fail("the connection closed before the response ended")


class Connection(asyncio.Protocol):
    """One client connection; one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.response is not None:
            self.response.feed(data)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.response is not None:
            self.response.connection_lost()

    def send(self, request: bytes, wire: str, keep_body: bool) -> Response:
        self.response = Response(time.perf_counter(), wire, keep_body)
        assert self.transport is not None
        self.transport.write(request)
        return self.response

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
            self.closed = True


async def connect(port: int) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return connection


@dataclass
class Tally:
    first_token: list[float] = field(default_factory=list)  # seconds, one per completed stream
    completed: int = 0
    failures: int = 0
    first_failure: str = ""
    open_streams: int = 0  # now: started and not yet ended
    streaming: int = 0  # now: past their first token and not yet ended, so held by the server
    events: int = 0

    def failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.first_failure = self.first_failure or f"{type(exc).__name__}: {exc}"


async def _one(connection: Connection, target: Target, request: bytes, tally: Tally, content_chunks: int,
               validate: bool, timeout: float) -> bool:
    """One stream on `connection`; returns whether the connection may carry another."""
    response = connection.send(request, target.wire, validate)
    try:
        await asyncio.wait_for(asyncio.shield(response.done), timeout)
        if validate:
            check_whole(response.body or b"", target.wire, content_chunks)
    except (StreamFailed, TimeoutError, OSError) as exc:
        tally.failed(exc)
        return False
    finally:
        connection.response = None
    tally.completed += 1
    tally.events += response.events
    tally.first_token.append(response.first_token or math.nan)
    return response.keep_alive


async def closed_loop(target: Target, concurrency: int, requests: int, duration: float, content_chunks: int,
                      *, spread: float = 0.0, validate: bool = False, request_timeout: float = 60.0) -> Tally:
    """`concurrency` workers, each streaming one request after another on its kept-alive connection,
    until `requests` streams have started or `duration` seconds have passed; worker k starts k/concurrency
    of `spread` late (paced streams started together would stay in lockstep)."""
    tally = Tally()
    remaining = requests
    deadline = time.monotonic() + duration
    request = target.request()

    async def worker(k: int) -> None:
        nonlocal remaining
        if spread:
            await asyncio.sleep(spread * k / concurrency)
        connection: Connection | None = None
        try:
            while remaining > 0 and time.monotonic() < deadline:
                remaining -= 1
                if connection is None or connection.closed:
                    try:
                        connection = await asyncio.wait_for(connect(target.port), request_timeout)
                    except (OSError, TimeoutError) as exc:
                        tally.failed(exc)
                        await asyncio.sleep(0.1)
                        continue
                if not await _one(connection, target, request, tally, content_chunks, validate, request_timeout):
                    connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()

    await asyncio.gather(*(worker(k) for k in range(min(concurrency, requests))))
    return tally


async def ramp(target: Target, streams: int, ramp_seconds: float, content_chunks: int, *,
               request_timeout: float, on_tick: Callable[[Tally], None] | None = None,
               tick: float = 0.25) -> Tally:
    """`streams` streams, one connection each, started evenly over `ramp_seconds`; each may take
    `request_timeout` seconds from its start. `on_tick(tally)` runs every `tick` seconds meanwhile
    (the caller samples memory there)."""
    tally = Tally()
    request = target.request()
    started = time.perf_counter()

    async def stream(k: int) -> None:
        await asyncio.sleep(max(0.0, started + ramp_seconds * k / streams - time.perf_counter()))
        tally.open_streams += 1
        connection: Connection | None = None
        try:
            begun = time.perf_counter()
            connection = await asyncio.wait_for(connect(target.port), request_timeout)
            response = connection.send(request, target.wire, False)
            response.started = begun  # the time to first token includes the connection's opening
            response.on_first_token = lambda: setattr(tally, "streaming", tally.streaming + 1)
            left = request_timeout - (time.perf_counter() - begun)
            try:
                await asyncio.wait_for(asyncio.shield(response.done), max(0.001, left))
            finally:
                if response.first_token is not None:
                    tally.streaming -= 1
            tally.completed += 1
            tally.events += response.events
            tally.first_token.append(response.first_token or math.nan)
        except (StreamFailed, TimeoutError, OSError) as exc:
            tally.failed(exc)
        finally:
            tally.open_streams -= 1
            if connection is not None:
                connection.close()

    async def ticker() -> None:
        while True:
            if on_tick is not None:
                on_tick(tally)
            await asyncio.sleep(tick)

    ticking = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(stream(k) for k in range(streams)))
    finally:
        ticking.cancel()
    return tally


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(v for v in values if not math.isnan(v))
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else math.nan
