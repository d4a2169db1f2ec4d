"""The memory backend of resumable streams: one instance keeps its own streams' events.

Bounded everywhere: a stream's events are capped at `max_bytes`, all streams' at `max_total_bytes` (an
append past either drops the stream, which stops being resumable); a finished stream is freed `grace`
seconds after its end (later while a resumed client is still reading it); a dropped stream leaves a
tombstone (its metadata only, so that a late client is told 410 rather than 404), at most MAX_TOMBSTONES
of them, each forgotten after TOMBSTONE_SECONDS. Readers sleep on an asyncio.Event per stream, set by
the next append or end: no polling.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from .store import TOMBSTONE_SECONDS, StreamExpired, StreamMeta

MAX_TOMBSTONES = 10_000


class _Stream:
    __slots__ = ("meta", "on_cancel", "events", "size", "finished", "readers", "changed", "expiry")

    def __init__(self, meta: StreamMeta, on_cancel: Callable[[], None]) -> None:
        self.meta = meta
        self.on_cancel = on_cancel
        self.events: list[bytes] = []  # event seq n is events[n - 1]
        self.size = 0
        self.finished = False
        self.readers = 0
        self.changed = asyncio.Event()  # replaced by a new one each time it is set
        self.expiry: asyncio.TimerHandle | None = None

    def wake(self) -> None:
        if self.readers:
            changed, self.changed = self.changed, asyncio.Event()
            changed.set()


class MemoryResumeStore:
    """ResumeStore (gateway/resume/store.py) for one instance."""

    def __init__(self, grace: float, max_bytes: int, max_total_bytes: int) -> None:
        self.grace = grace
        self.max_bytes = max_bytes
        self.max_total_bytes = max_total_bytes
        self.total_bytes = 0
        self._streams: dict[str, _Stream] = {}
        self._tombstones: OrderedDict[str, tuple[float, StreamMeta]] = OrderedDict()  # by time of drop

    async def start(self) -> None:
        """Nothing to start: each finished stream's expiry is a timer handle, not a task."""

    async def close(self) -> None:
        for stream_id in list(self._streams):
            self._drop(stream_id)

    async def open(self, meta: StreamMeta, on_cancel: Callable[[], None]) -> None:
        if meta.stream_id in self._streams or meta.stream_id in self._tombstones:
            raise ValueError("a stream with this id exists already")
        self._streams[meta.stream_id] = _Stream(meta, on_cancel)

    async def append(self, stream_id: str, seq: int, event: bytes) -> bool:
        stream = self._streams.get(stream_id)
        if stream is None or stream.finished:
            return False
        if seq != len(stream.events) + 1:
            raise ValueError(f"event {seq} appended after event {len(stream.events)}")
        size = len(event)
        if stream.size + size > self.max_bytes or self.total_bytes + size > self.max_total_bytes:
            self._drop(stream_id)
            return False
        stream.events.append(event)
        stream.size += size
        self.total_bytes += size
        stream.wake()
        return True

    async def finish(self, stream_id: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.finished:
            return
        stream.finished = True
        stream.wake()
        self._expire_later(stream_id, stream)

    def _expire_later(self, stream_id: str, stream: _Stream) -> None:
        stream.expiry = asyncio.get_running_loop().call_later(self.grace, self._expire, stream_id)

    def _expire(self, stream_id: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.readers:  # a resumed client is still replaying it: freed a grace period after it stops
            self._expire_later(stream_id, stream)
        else:
            self._drop(stream_id)

    async def drop(self, stream_id: str) -> None:
        self._drop(stream_id)

    def _drop(self, stream_id: str) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.expiry is not None:
            stream.expiry.cancel()
        self.total_bytes -= stream.size
        stream.events = []
        stream.size = 0
        changed = stream.changed  # readers see the stream gone from the table: StreamExpired
        changed.set()
        self._bury(stream.meta)

    def _bury(self, meta: StreamMeta) -> None:
        now = time.monotonic()
        tombstones = self._tombstones
        tombstones[meta.stream_id] = (now, meta)
        while tombstones:
            oldest_id, (buried, _) = next(iter(tombstones.items()))
            if len(tombstones) <= MAX_TOMBSTONES and now - buried < TOMBSTONE_SECONDS:
                break
            del tombstones[oldest_id]

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """Also a dropped stream's, while its tombstone lasts: its events raise StreamExpired (410)."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream.meta
        tombstone = self._tombstones.get(stream_id)
        if tombstone is None or time.monotonic() - tombstone[0] >= TOMBSTONE_SECONDS:
            return None
        return tombstone[1]

    async def has_readers(self, stream_id: str) -> bool:
        stream = self._streams.get(stream_id)
        return stream is not None and stream.readers > 0

    async def events(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamExpired(stream_id)
        streams = self._streams
        stream.readers += 1
        try:
            seq = after
            while True:
                while seq < len(stream.events):
                    seq += 1
                    yield seq, stream.events[seq - 1]
                if streams.get(stream_id) is not stream:  # dropped while the reader waited or wrote
                    raise StreamExpired(stream_id)
                if stream.finished:
                    return
                await stream.changed.wait()
        finally:
            stream.readers -= 1

    async def cancel(self, stream_id: str) -> bool:
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        if not stream.finished:
            stream.on_cancel()
        return True
