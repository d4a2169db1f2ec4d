"""The owners' writes to Redis, batched: every event appended while the previous round trip was on its
way goes in the next one, one script call per stream, all streams in one pipeline.

A round trip costs the client far more CPU than the bytes it carries (redis-py spends about as much on
a PING as on an XADD), so at many concurrent streams one pipeline per batch instead of one call per
event is what keeps Redis off the per-chunk cost. append() does not wait for Redis: an event is in
Redis a round trip later, and a stream whose write fails is dropped (its next append returns False).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from . import redis_scripts as scripts

log = logging.getLogger("gateway.resume")


@dataclass
class _Pending:
    keys: tuple[str, str, str, str]
    events: list[int | bytes] = field(default_factory=list)  # seq, event, seq, event...
    finish: bool = False


class EventWriter:
    def __init__(self, client: aioredis.Redis, *, max_bytes: int, live_ttl_ms: int, finished_ttl_ms: int,
                 tombstone_ttl_ms: int,
                 lost: Callable[[str], Awaitable[None]], failed: Callable[[str, BaseException], None],
                 recovered: Callable[[], None]) -> None:
        self.client = client
        self._script = client.register_script(scripts.WRITE)
        self._limits = (max_bytes, live_ttl_ms, tombstone_ttl_ms)
        self.finished_ttl_ms = finished_ttl_ms
        self._lost, self._failed, self._recovered = lost, failed, recovered  # lost: drops the stream
        self._pending: dict[str, _Pending] = {}
        self._wake = asyncio.Event()
        self._next: asyncio.Future[None] | None = None  # done once what is pending now is written
        self._in_flight: asyncio.Future[None] | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._next = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._write_forever())

    def add(self, stream_id: str, keys: tuple[str, str, str, str], seq: int, event: bytes) -> None:
        pending = self._pending.get(stream_id)
        if pending is None:
            pending = self._pending[stream_id] = _Pending(keys)
        pending.events += (seq, event)
        self._wake.set()

    async def finish(self, stream_id: str, keys: tuple[str, str, str, str]) -> None:
        """Finishes the stream after its pending events, in the same script call; returns once written."""
        pending = self._pending.get(stream_id)
        if pending is None:
            pending = self._pending[stream_id] = _Pending(keys)
        pending.finish = True
        self._wake.set()
        await self.flush()

    def discard(self, stream_id: str) -> None:
        self._pending.pop(stream_id, None)

    async def flush(self) -> None:
        """Returns once everything added so far is written (or found lost)."""
        if self._task is None or self._task.done():
            return  # not started, or closed: nothing will be written
        waiting = self._next if self._pending else self._in_flight  # batches are written in order
        if waiting is not None:
            await asyncio.shield(waiting)

    async def close(self) -> None:
        """Writes what is pending, then stops."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:  # looked at before each wait: a close or an add never goes unseen
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._pending, {}
            assert self._next is not None
            self._in_flight, self._next = self._next, loop.create_future()
            try:
                lost = await self._write(batch)
            except Exception:  # a bug here must not leave finish() waiting forever
                log.exception("resume: writing a batch of events to redis failed")
                lost = list(batch)
            finally:
                self._in_flight.set_result(None)
                self._in_flight = None
            for stream_id in lost:
                await self._lost(stream_id)

    async def _write(self, batch: dict[str, _Pending]) -> list[str]:
        """Writes the batch in one round trip; returns the streams that could not be written."""
        max_bytes, live_ttl_ms, tombstone_ttl_ms = self._limits
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for pending in batch.values():
                    finished_ttl_ms = self.finished_ttl_ms if pending.finish else 0
                    await self._script(keys=pending.keys, client=pipe,
                                       args=(max_bytes, live_ttl_ms, finished_ttl_ms, tombstone_ttl_ms,
                                             *pending.events))
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self._failed("append", exc)
            return list(batch)
        self._recovered()
        # 0: no longer live there (expired, dropped elsewhere); -1: over its cap; an error: a bad seq
        return [stream_id for stream_id, result in zip(batch, results) if result != 1]
