"""Server-Sent Events: an incremental decoder for upstream streams, and the client-side writer."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_writer import StreamWriter
from aiohttp.web import BaseRequest, StreamResponse
from aiohttp_sse import EventSourceResponse

from .coroutines import Resumed

if TYPE_CHECKING:
    from .errors import GatewayError

DEFAULT_MAX_EVENT_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"


class SSEEvent:
    """One dispatched event. `data` stays bytes: orjson parses bytes without a decode step."""

    __slots__ = ("event", "data", "id")

    def __init__(self, data: bytes, event: str | None = None, id: str | None = None) -> None:
        self.data = data
        self.event = event
        self.id = id

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, SSEEvent)
            and (self.data, self.event, self.id) == (other.data, other.event, other.id)
        )

    def __repr__(self) -> str:
        return f"SSEEvent(data={self.data!r}, event={self.event!r}, id={self.id!r})"


class SSEDecodeError(ValueError):
    pass


class SSEDecoder:
    """Incremental decoder following the WHATWG event-stream rules.

    Accepts LF, CRLF and CR line ends, lines split anywhere across reads (multi-byte characters
    included: only whole lines are ever decoded), comments, multi-line data, `event:` names, and a
    leading byte order mark.
    Only the unfinished tail line is kept between reads; a line or an event over `max_event_bytes`
    raises SSEDecodeError instead of growing memory.
    """

    __slots__ = ("max_event_bytes", "_partial", "_pending_cr", "_data", "_data_size", "_event", "_id", "_head")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self._partial = bytearray()
        self._pending_cr = False  # the last read ended in CR: a leading LF in the next one belongs to it
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: str | None = None
        self._id: str | None = None
        self._head: bytes | None = b""  # the stream's first bytes until a leading BOM is ruled out

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._head is not None:
            chunk = self._without_bom(chunk)
            if not chunk:
                return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        crs = b"\r" in chunk
        if crs:
            self._pending_cr = chunk.endswith(b"\r")
        events: list[SSEEvent] = []
        if self._partial or self._data or self._event is not None:
            self._feed_lines(_lf_ended(chunk) if crs else chunk, events)
            return events
        # At the start of a line, between events: the usual `data: <one line>` events are cut whole, by
        # their blank line (LF LF, or CRLF CRLF as Gemini sends), without going line by line or rewriting
        # the read's line ends; anything else takes the line-by-line path.
        blocks = chunk.split(b"\r\n\r\n" if crs else b"\n\n")
        rest = blocks.pop()
        limit = self.max_event_bytes
        for block in blocks:
            if (block[:6] == b"data: " and len(block) <= limit and b"\n" not in block
                    and not (crs and b"\r" in block)):
                events.append(SSEEvent(block[6:], None, self._id))
            else:
                self._feed_lines((_lf_ended(block) if crs else block) + b"\n\n", events)
        if rest:
            self._feed_lines(_lf_ended(rest) if crs else rest, events)
        return events

    def _feed_lines(self, chunk: bytes, events: list[SSEEvent]) -> None:
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            if self._partial:
                self._partial += lines[0]
                lines[0] = bytes(self._partial)
                self._partial.clear()
            for line in lines:
                if len(line) > self.max_event_bytes:
                    raise SSEDecodeError(f"line longer than {self.max_event_bytes} bytes")
                event = self._line(line)
                if event is not None:
                    events.append(event)
        if tail:
            self._partial += tail
            if len(self._partial) > self.max_event_bytes:
                raise SSEDecodeError(f"line longer than {self.max_event_bytes} bytes")

    def _without_bom(self, chunk: bytes) -> bytes:
        """The spec's decoding drops one leading U+FEFF; kept, it would hide the first field's name."""
        head = (self._head or b"") + chunk  # only called while _head is not None
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head  # too short to tell yet
            return b""
        self._head = None
        return head[len(_BOM):] if head.startswith(_BOM) else head

    def _line(self, line: bytes) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            event = SSEEvent(data, self._event, self._id)
            self._data = []
            self._data_size = 0
            self._event = None
            return event
        if line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._data_size += len(value) + 1
            if self._data_size > self.max_event_bytes:
                raise SSEDecodeError(f"event larger than {self.max_event_bytes} bytes")
            self._data.append(value)
            return None
        if line[0] == 0x3A:  # ":" comment
            return None
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"data":  # "data" with no colon: an empty data line
            self._data.append(b"")
        # retry and unknown fields are ignored, as the spec says
        return None


def _lf_ended(text: bytes) -> bytes:
    """CRLF and CR line ends as LF: the line-by-line path then splits on LF alone."""
    return text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def encode_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
KEEPALIVE_COMMENT = b": keep-alive\n\n"


class EventStream(EventSourceResponse):
    """aiohttp-sse's response (headers, chunked encoding) writing pre-encoded events, with a keep-alive
    comment only after `keepalive` seconds of silence, and a client that does not take a write within
    `send_timeout` seconds dropped as too slow (`too_slow` set, connection aborted: the blocked write
    fails, or aiohttp cancels the handler).

    The events written during one step of the handler's task (usually every event of one upstream
    read) go out in one write: `write_event` queues its event and a loop callback writes the queue as
    soon as the task yields to the loop, whatever it then waits for, so an event is never held back
    for another one. No task of its own: the keep-alive is a loop timer.
    """

    _send_headers_immediately = False  # aiohttp's: the headers go out with the first events, in one write

    def __init__(self, keepalive: float, send_timeout: float = 30.0) -> None:
        super().__init__(sep="\n", ping_interval=keepalive, send_timeout=send_timeout, allow_all_methods=True)
        self._loop = asyncio.get_running_loop()
        self._queued: list[bytes] = []  # events written since the last flush
        self._flush_handle: asyncio.Handle | None = None
        self._write_error: ConnectionResetError | None = None  # a flush's, raised by the next write
        self._protocol: BaseProtocol | None = None
        self._transport: asyncio.Transport | None = None
        self._last_write = 0.0
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self.too_slow = False
        self.keepalives = 0  # comments sent, for the request's access record
        self.stopped_by: GatewayError | None = None  # set when the gateway ends the stream early (a DELETE)

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)
        if not getattr(request.protocol, "tcp_user_timeout_set", False):  # gateway/server.py's handler sets it
            self._set_tcp_user_timeout(request)
        writer = await StreamResponse.prepare(self, request)  # not aiohttp-sse's: it starts a ping task
        self.enable_chunked_encoding()
        self._protocol, self._transport = request.protocol, request.transport
        self._last_write = self._loop.time()
        self._keepalive_timer = self._loop.call_at(self._last_write + self._ping_interval, self._keepalive_due)
        self._flush_handle = self._loop.call_soon(self._flush)  # the headers, with any event written meanwhile
        return writer

    async def write_event(self, event: bytes) -> None:
        if self._write_error is not None:
            raise self._write_error
        self._queued.append(event)
        if self._client_behind():
            await self._until_client_reads(self._drained())

    async def write_events(self, events: list[bytes], at_once: bool = False) -> None:
        """write_event for each of one batch's events, in one step (a subclass that frames each event
        overrides this too). `at_once`: written now, with the headers if they have not gone yet, rather
        than from the flush a loop turn later. The first batch is, when the answer goes on after it, so
        that the first token does not wait behind the turn (0.1-0.2 ms inside the gateway at 100 paced
        streams; the client's time to first token did not move measurably)."""
        if self._write_error is not None:
            raise self._write_error
        self._queued += events
        if not at_once:
            if self._client_behind():
                await self._until_client_reads(self._drained())
            return
        self._flush_now()
        if self._write_error is not None:
            raise self._write_error
        protocol = self._protocol
        if protocol is not None and protocol.writing_paused:
            await self._until_client_reads(self._drained())

    def _client_behind(self) -> bool:
        """Schedules the flush of what is queued; True, once it is flushed now, when the client is behind
        (its connection paused writing): the writer must then wait until it reads."""
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        protocol = self._protocol
        if protocol is not None and protocol.writing_paused:
            self._flush_now()
            return True
        return False

    async def _drained(self) -> None:
        writer = self._payload_writer
        if writer is not None:
            await writer.drain()
        if self._write_error is not None:
            raise self._write_error

    async def end_with_error(self, error: GatewayError) -> str:
        """Ends a stream that already began: the error as an event, then [DONE], so that no client waits
        forever. Returns the request's outcome, the error's code. (A subclass that numbers and keeps events
        numbers and keeps this one too.)"""
        await self.write_event(encode_event(error.to_json()))
        await self.write_event(DONE_EVENT)
        await self.write_eof()
        return error.code or str(error.status)

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._write_error is not None:
            raise self._write_error
        if self._queued:
            data = b"".join(self._queued) + data
            self._queued.clear()
        self._last_write = self._loop.time()
        await self._until_client_reads(super().write_eof(data))  # its flush waits on the client too

    async def _until_client_reads(self, write: Coroutine[Any, Any, None]) -> None:
        """Awaits a write that may wait on the client; past `send_timeout` the client is dropped as too slow.
        A write that does not wait (the client keeps up: the usual case) ends at its first step, with no timer."""
        try:
            waiting = write.send(None)
        except StopIteration:
            return
        assert self._send_timeout is not None  # __init__ always passes one
        deadline = self._loop.call_later(self._send_timeout, self._drop_slow_client)
        try:
            await Resumed(write, waiting)
        finally:
            deadline.cancel()

    def _flush_now(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        queued = self._queued
        writer = self._payload_writer
        if writer is None or self._write_error is not None:  # the response ended meanwhile, or broke
            queued.clear()
            return
        assert isinstance(writer, StreamWriter)  # aiohttp's, for every served request
        try:
            if not queued:  # the 200 is committed before any event: its headers go out alone
                writer.send_headers()
                return
            data = queued[0] if len(queued) == 1 else b"".join(queued)
            queued.clear()
            self._last_write = self._loop.time()
            _write_at_once(writer, data)
        except ConnectionResetError as exc:  # the connection is closing: the handler learns it on its next write
            self._write_error = exc

    def _keepalive_due(self) -> None:
        self._keepalive_timer = None
        if self._eof_sent or self._payload_writer is None:
            return
        now = self._loop.time()
        due = self._last_write + self._ping_interval
        if now >= due:
            protocol = self._protocol
            if protocol is not None and not protocol.writing_paused:  # else a write already waits on the client
                # queued here, not through write_event: a subclass that numbers and keeps events
                # (gateway/resume/relay.py) overrides write_event, and a comment is never numbered or kept
                self._queued.append(KEEPALIVE_COMMENT)
                self._flush_now()
                if self._write_error is not None:
                    return
                self.keepalives += 1
            due = now + self._ping_interval
        self._keepalive_timer = self._loop.call_at(due, self._keepalive_due)

    def _drop_slow_client(self) -> None:
        self.too_slow = True
        if self._transport is not None:
            self._transport.abort()

    def stop_streaming(self) -> None:
        """The handler is done with the stream: its timers stop; events still queued are dropped."""
        for handle in (self._flush_handle, self._keepalive_timer):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._keepalive_timer = None
        self._queued.clear()


def _write_at_once(writer: StreamWriter, data: bytes) -> None:
    """aiohttp's body write, run to its end from a loop callback: with drain=False (and no compression,
    which an event stream never has) StreamWriter.write never suspends, and keeps aiohttp's framing and
    accounting (the headers sent with the first bytes, chunked encoding, output_size)."""
    step = writer.write(data, drain=False)
    try:
        step.send(None)
    except StopIteration:
        return
    step.close()
    raise RuntimeError("aiohttp's StreamWriter.write suspended with drain=False")
