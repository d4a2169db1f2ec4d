"""Server-Sent Events: an incremental decoder for upstream streams, and the client-side writer."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp_sse import EventSourceResponse

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
        if b"\r" in chunk:
            self._pending_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()
        events: list[SSEEvent] = []
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
        return events

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


def encode_event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"
KEEPALIVE_COMMENT = b": keep-alive\n\n"


class EventStream(EventSourceResponse):
    """aiohttp-sse's response (headers, chunked encoding) writing pre-encoded events, with a keep-alive
    comment only after `keepalive` seconds of silence, and a client that does not take a write within
    `send_timeout` seconds dropped as too slow (`too_slow` set, connection aborted: the blocked write
    fails, or aiohttp cancels the handler). One task per stream watches both; writes only record the time."""

    def __init__(self, keepalive: float, send_timeout: float = 30.0) -> None:
        super().__init__(sep="\n", ping_interval=keepalive, send_timeout=send_timeout, allow_all_methods=True)
        self._loop = asyncio.get_running_loop()
        self._last_write = 0.0
        self._writing_since: float | None = None  # when the write in progress began
        self.too_slow = False
        self.keepalives = 0  # comments sent, for the request's access record
        self.stopped_by: GatewayError | None = None  # set when the gateway ends the stream early (a DELETE)

    async def write_event(self, event: bytes) -> None:
        self._last_write = self._writing_since = self._loop.time()
        try:
            await self.write(event)
        finally:
            self._writing_since = None

    # Keep-alive comments go through this name: a subclass that numbers and keeps events
    # (gateway/resume/relay.py) overrides write_event only, so comments are never numbered or kept.
    _write_comment = write_event

    async def write_eof(self, data: bytes = b"") -> None:
        self._writing_since = self._loop.time()  # its flush waits on the client too
        try:
            await super().write_eof(data)
        finally:
            self._writing_since = None

    def _drop_slow_client(self) -> None:
        self.too_slow = True
        self._abort_transport()

    async def _ping(self) -> None:  # replaces aiohttp-sse's fixed-rate ping
        loop = self._loop
        interval = self._ping_interval
        send_timeout = self._send_timeout
        assert send_timeout is not None  # __init__ always passes one
        self._last_write = loop.time()
        while True:
            now = loop.time()
            writing_since = self._writing_since
            if writing_since is not None:  # a write waits for the client to read
                if now - writing_since >= send_timeout:
                    return self._drop_slow_client()
                await asyncio.sleep(writing_since + send_timeout - now)
                continue
            if now - self._last_write >= interval:
                try:
                    async with asyncio.timeout(send_timeout):
                        await self._write_comment(KEEPALIVE_COMMENT)
                    self.keepalives += 1
                except TimeoutError:
                    return self._drop_slow_client()
                except (ConnectionResetError, RuntimeError):
                    return
                continue
            # wake for the next keep-alive, or in time to time out a write that begins meanwhile
            await asyncio.sleep(min(self._last_write + interval - now, send_timeout))
