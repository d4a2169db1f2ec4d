"""Resumable streams kept in Redis, so that a client may resume on any instance (resume.backend: redis).

The key layout and the scripts are in redis_scripts.py. The owner checks the byte caps itself, then
hands each event to the writer (redis_writer.py), which sends all the events pending, of all streams,
in one pipelined round trip: one script call per stream (state check, byte count, XADD `<seq>-0`,
TTLs refreshed; the stream's end in the same call). A reader on any instance reads after a given seq
exactly, with XREAD. Every key has a TTL: while live, grace + the owner's heartbeat TTL (refreshed on
every write and every heartbeat); once finished, grace; once dropped, a few seconds. The meta outlives
the rest of a finished or dropped stream by TOMBSTONE_SECONDS (a tombstone: a late client is told 410,
not 404). Redis never keeps a stream whose owner died.

One background task per instance beats every `heartbeat` seconds, in one pipelined round trip: it
refreshes the owner key of every live stream this instance owns (TTL: three beats), reads their
cancel flags and refreshes the readers this instance serves. A reader that finds a live stream
without its owner key reads what is stored, then raises OwnerLost. A cancel from any instance sets
the stream's cancel flag and publishes its id on the owner's channel; one subscription per instance
runs the stream's on_cancel, and the heartbeat's look at the flags catches a message it missed.

Readers block in XREAD for at most `block` seconds at a time, on a pool of their own (`readers`
connections, each held while a reader blocks): a burst of readers waits for one, and never takes
the connections that the owners' writes use.

When Redis fails: open() raises ResumeUnavailable (the request is told 503 resume_unavailable); a
write that fails drops its streams, whose next append returns False (append does not wait for Redis,
so the event that was being written is the last one kept; the live stream itself goes on); finish() and
drop() log (the keys expire on their own); has_readers() is False; meta(), cancel() and a reader raise
ResumeUnavailable (503). One log line per outage, one when Redis answers again.

close() writes what is pending, and does not drop the live streams this instance owns, unlike the
memory store (whose memory goes with it): it deletes their owner keys, so that their readers elsewhere
get the stored events then OwnerLost at once (upstream_owner_lost), and leaves them to expire after grace.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..config import ResumeConfig
from . import redis_scripts as scripts
from .redis_writer import EventWriter
from .store import TOMBSTONE_SECONDS, OwnerLost, ResumeUnavailable, StreamExpired, StreamMeta

log = logging.getLogger("gateway.resume")

HEARTBEAT = 1.0  # seconds between two beats of an instance
OWNER_TTL_BEATS = 3  # the owner key lives three beats: one late beat is not a lost owner
BLOCK = 1.0  # seconds a reader blocks in one XREAD; it looks at the owner after each empty one
TIMEOUT = 1.0  # seconds for a Redis connect or reply: a hung Redis must not hang the stream
POOL_SIZE = 50  # connections per instance for the owners' appends, the beats and the subscription
READERS = 100  # connections per instance for readers (a reader holds one while it blocks)
READERS_WAIT = 5.0  # seconds a reader waits for one of them
BATCH = 256  # events per XREAD
DROPPED_TTL_MS = 5000  # what is left of a dropped stream's events: its `end` entry, for readers blocked on it
TOMBSTONE_TTL_MS = round(TOMBSTONE_SECONDS * 1000)
MIN_TTL_MS = 1000  # grace 0 still leaves a finished stream to the readers that are on it


@dataclass
class _Owned:
    keys: tuple[str, str, str, str]
    on_cancel: Callable[[], None]
    bytes: int = 0
    finished_at: float | None = None  # monotonic; forgotten grace seconds later
    cancelled: bool = False


class RedisResumeStore:
    def __init__(self, settings: ResumeConfig, instance_id: str, *, heartbeat: float = HEARTBEAT,
                 block: float = BLOCK, pool_size: int = POOL_SIZE, readers: int = READERS) -> None:
        self.instance_id = instance_id
        self.max_bytes = settings.max_bytes
        self.max_total_bytes = settings.max_total_bytes
        self.grace = settings.grace
        self.grace_ms = max(MIN_TTL_MS, round(settings.grace * 1000))
        self.heartbeat = heartbeat
        self.owner_ttl_ms = max(1, round(heartbeat * OWNER_TTL_BEATS * 1000))
        self.live_ttl_ms = self.grace_ms + self.owner_ttl_ms
        self.reader_ttl_ms = self.owner_ttl_ms
        self.block_ms = max(1, round(block * 1000))
        self.total_bytes = 0  # what this instance appended for the streams it owns that are still kept
        self._owned: dict[str, _Owned] = {}
        self._reading: dict[str, set[str]] = {}  # stream id -> the readers this instance serves on it
        self._numbers = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._failing = False
        self._closed = False
        retry = Retry(NoBackoff(), 1)  # one retry: a stale pooled socket
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.url, max_connections=pool_size, timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
            socket_timeout=TIMEOUT, retry=retry)
        self.client = aioredis.Redis.from_pool(pool)
        reader_pool = aioredis.BlockingConnectionPool.from_url(
            settings.url, max_connections=readers, timeout=READERS_WAIT, socket_connect_timeout=TIMEOUT,
            socket_timeout=block + TIMEOUT, retry=retry)
        self.reader_client = aioredis.Redis.from_pool(reader_pool)
        self._writer = EventWriter(self.client, max_bytes=self.max_bytes, live_ttl_ms=self.live_ttl_ms,
                                   finished_ttl_ms=self.grace_ms, tombstone_ttl_ms=TOMBSTONE_TTL_MS, lost=self.drop,
                                   failed=self._failed, recovered=self._recovered)
        self._drop = self.client.register_script(scripts.DROP)
        self._cancel = self.client.register_script(scripts.CANCEL)
        self._refresh_readers = self.client.register_script(scripts.READING)
        self._count_readers = self.client.register_script(scripts.READERS)
        self._pubsub = self.client.pubsub()

    async def start(self) -> None:
        try:
            await self._pubsub.subscribe(scripts.cancel_channel(self.instance_id))
        except (RedisError, OSError) as exc:
            self._failed("subscribe", exc)  # the listener tries again
        self._writer.start()
        self._tasks = [asyncio.create_task(self._beat_forever()), asyncio.create_task(self._listen_forever())]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._writer.close()  # what the owners sent their clients reaches Redis first
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        live = [stream_id for stream_id, owned in self._owned.items() if owned.finished_at is None]
        self._owned.clear()
        self.total_bytes = 0
        try:
            if live:
                async with self.client.pipeline(transaction=False) as pipe:
                    for stream_id in live:
                        meta_key, events_key, owner_key, _ = scripts.stream_keys(stream_id)
                        pipe.delete(owner_key)
                        pipe.pexpire(meta_key, self.grace_ms)
                        pipe.pexpire(events_key, self.grace_ms)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("close", exc)  # the owner keys expire within three beats
        await self._pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis-py 8.2 only
        await self.client.aclose()
        await self.reader_client.aclose()

    # ------------------------------------------------------------------------------------- the owner's side

    async def open(self, meta: StreamMeta, on_cancel: Callable[[], None]) -> None:
        if not scripts.valid_id(meta.stream_id):
            raise ValueError("a stream id is url-safe and at most 128 characters")
        meta_key, events_key, owner_key, readers_key = scripts.stream_keys(meta.stream_id)
        fields = ["token_sha256", meta.token_sha256, "owner", meta.owner, "created", repr(meta.created),
                  "state", "live", "bytes", "0", "cancel", "0"]
        if meta.key_id is not None:  # absent on open access
            fields += ["key_id", meta.key_id]
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(meta_key, events_key, readers_key)
                pipe.hset(meta_key, items=fields)
                pipe.pexpire(meta_key, self.live_ttl_ms)
                pipe.set(owner_key, self.instance_id, px=self.owner_ttl_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("open", exc)
            raise ResumeUnavailable(meta.stream_id) from None
        self._recovered()
        self._owned[meta.stream_id] = _Owned((meta_key, events_key, owner_key, readers_key), on_cancel)

    async def append(self, stream_id: str, seq: int, event: bytes) -> bool:
        """Checks the caps here and queues the event for the writer: False for an event past a cap, or
        for any event of a stream whose earlier write failed (it was dropped then)."""
        owned = self._owned.get(stream_id)
        if owned is None or owned.finished_at is not None or self._closed:
            return False
        size = len(event)
        if owned.bytes + size > self.max_bytes or self.total_bytes + size > self.max_total_bytes:
            await self.drop(stream_id)
            return False
        owned.bytes += size
        self.total_bytes += size
        self._writer.add(stream_id, owned.keys, seq, event)
        return True

    async def finish(self, stream_id: str) -> None:
        owned = self._owned.get(stream_id)
        if owned is None or owned.finished_at is not None or self._closed:
            return
        owned.finished_at = time.monotonic()
        await self._writer.finish(stream_id, owned.keys)

    async def flush(self) -> None:
        """Returns once every event appended so far is in Redis (or its stream dropped)."""
        await self._writer.flush()

    async def drop(self, stream_id: str) -> None:
        self._writer.discard(stream_id)
        self._forget(stream_id)
        if not scripts.valid_id(stream_id):
            return
        try:
            await self._drop(keys=scripts.stream_keys(stream_id), args=(DROPPED_TTL_MS, TOMBSTONE_TTL_MS))
        except (RedisError, OSError) as exc:
            self._failed("drop", exc)  # its keys expire on their own
        else:
            self._recovered()

    def _forget(self, stream_id: str) -> None:
        owned = self._owned.pop(stream_id, None)
        if owned is not None:
            self.total_bytes -= owned.bytes

    # ------------------------------------------------------------------------------------ any instance's side

    async def meta(self, stream_id: str) -> StreamMeta | None:
        if not scripts.valid_id(stream_id):
            return None
        try:
            found: Any = await self.client.hgetall(scripts.stream_keys(stream_id)[0])
            fields: dict[bytes, bytes] = found  # the client does not decode replies
        except (RedisError, OSError) as exc:
            self._failed("meta", exc)
            raise ResumeUnavailable(stream_id) from None
        if not fields:
            return None
        key_id = fields.get(b"key_id")
        return StreamMeta(stream_id, key_id.decode() if key_id is not None else None,
                          fields[b"token_sha256"].decode(), fields[b"owner"].decode(), float(fields[b"created"]))

    async def has_readers(self, stream_id: str) -> bool:
        if self._reading.get(stream_id):
            return True
        if not scripts.valid_id(stream_id):
            return False
        try:
            count = await self._count_readers(keys=(scripts.stream_keys(stream_id)[3],))
        except (RedisError, OSError) as exc:
            self._failed("has_readers", exc)
            return False
        return bool(count)

    async def cancel(self, stream_id: str) -> bool:
        if not scripts.valid_id(stream_id):
            return False
        try:
            told = await self._cancel(keys=scripts.stream_keys(stream_id)[:2],
                                      args=(scripts.CANCEL_CHANNEL_PREFIX, stream_id))
        except (RedisError, OSError) as exc:
            self._failed("cancel", exc)
            if stream_id not in self._owned:
                raise ResumeUnavailable(stream_id) from None
            told = 1
        self._cancelled(stream_id)  # owned here: at once, without waiting for the message
        return bool(told)

    async def events(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        if not scripts.valid_id(stream_id):
            raise StreamExpired(stream_id)
        meta_key, events_key, owner_key, readers_key = scripts.stream_keys(stream_id)
        reader = f"{self.instance_id}:{next(self._numbers)}"
        last = max(0, after)
        owner_lost = False
        try:
            await self._readable(stream_id, meta_key, events_key, owner_key)
            self._reading.setdefault(stream_id, set()).add(reader)
            await self._refresh_readers(keys=(readers_key,), args=(self.reader_ttl_ms, reader))
            while True:
                # once the owner is lost, no more blocking: what is stored, then OwnerLost
                reply: Any = await self.reader_client.xread({events_key: f"{last}-0"}, count=BATCH,
                                                       block=None if owner_lost else self.block_ms)
                entries = reply[0][1] if reply else []
                if not entries:
                    if owner_lost:
                        raise OwnerLost(stream_id)
                    owner_lost = await self._owner_lost(stream_id, meta_key, events_key, owner_key)
                    continue
                for entry_id, fields in entries:
                    event = fields.get(b"e")
                    if event is None:  # the `end` entry
                        if fields.get(b"end") == b"finished":
                            return
                        raise StreamExpired(stream_id)
                    seq = int(entry_id.split(b"-", 1)[0])
                    if seq != last + 1:  # events were lost on the way: the client would miss some
                        raise StreamExpired(stream_id)
                    last = seq
                    yield seq, event
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            raise ResumeUnavailable(stream_id) from None
        finally:
            await self._stop_reading(stream_id, reader, readers_key)

    async def _readable(self, stream_id: str, meta_key: str, events_key: str, owner_key: str) -> tuple[bytes, bool]:
        """The stream's state and whether its owner is alive, in one round trip; StreamExpired when it is
        gone, dropped, or finished with its events expired (its meta is a tombstone)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(meta_key, "state")
            pipe.exists(events_key)
            pipe.exists(owner_key)
            state, events_kept, owner_alive = await pipe.execute()
        if state in (None, b"dropped") or (state == b"finished" and not events_kept):
            raise StreamExpired(stream_id)
        return bytes(state), bool(owner_alive)

    async def _owner_lost(self, stream_id: str, meta_key: str, events_key: str, owner_key: str) -> bool:
        """Whether the stream is live with no owner; StreamExpired when it is no longer readable."""
        state, owner_alive = await self._readable(stream_id, meta_key, events_key, owner_key)
        return state == b"live" and not owner_alive

    async def _stop_reading(self, stream_id: str, reader: str, readers_key: str) -> None:
        readers = self._reading.get(stream_id)
        if readers is None or reader not in readers:
            return
        readers.discard(reader)
        if not readers:
            del self._reading[stream_id]
        try:
            await self.client.zrem(readers_key, reader)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)  # it expires within three beats

    # --------------------------------------------------------------------------------- background work

    async def beat(self) -> None:  # public: tests beat at once instead of waiting for it
        """Refreshes the owner key of every live stream owned here and every reader served here, reads the
        cancel flags, in one round trip; forgets the finished streams whose grace has passed."""
        now = time.monotonic()
        for stream_id in [s for s, owned in self._owned.items()
                          if owned.finished_at is not None and now - owned.finished_at >= self.grace]:
            self._forget(stream_id)
        live = [stream_id for stream_id, owned in self._owned.items() if owned.finished_at is None]
        reading = [(stream_id, tuple(readers)) for stream_id, readers in self._reading.items()]
        if not live and not reading:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for stream_id in live:
                meta_key, events_key, owner_key, _ = scripts.stream_keys(stream_id)
                pipe.set(owner_key, self.instance_id, px=self.owner_ttl_ms)
                pipe.pexpire(meta_key, self.live_ttl_ms)
                pipe.pexpire(events_key, self.live_ttl_ms)
                pipe.hget(meta_key, "cancel")
            for stream_id, readers in reading:
                await self._refresh_readers(keys=(scripts.stream_keys(stream_id)[3],),
                                            args=(self.reader_ttl_ms, *readers), client=pipe)
            results = await pipe.execute()
        for index, stream_id in enumerate(live):
            _, meta_kept, _, cancel = results[4 * index:4 * index + 4]
            if not meta_kept:  # gone from Redis (expired while it failed, or flushed): not resumable
                self._forget(stream_id)
            elif cancel == b"1":
                self._cancelled(stream_id)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                self._failed("heartbeat", exc)
            else:
                self._recovered()

    async def _listen_forever(self) -> None:
        channel = scripts.cancel_channel(self.instance_id)
        while True:
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(channel)
                message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=self.heartbeat)
            except (RedisError, OSError) as exc:
                self._failed("subscribe", exc)
                await asyncio.sleep(self.heartbeat)
                continue
            if message is not None and message["type"] == "message":
                self._cancelled(message["data"].decode())

    def _cancelled(self, stream_id: str) -> None:
        owned = self._owned.get(stream_id)
        if owned is None or owned.cancelled:
            return
        owned.cancelled = True
        try:
            owned.on_cancel()
        except Exception:  # the plumbing's callback: its bug must not stop the cancels of other streams
            log.exception("resume: on_cancel of a stream failed")

    def _failed(self, operation: str, exc: BaseException) -> None:
        if not self._failing:  # one line per outage, not one per event
            self._failing = True
            log.warning("resume backend redis failed on %s (%s: %s): streams are not resumable until it answers "
                        "again", operation, type(exc).__name__, exc)

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.info("resume backend redis answers again")
