"""The Redis resume store: two store instances (A owns the streams, B resumes them) on a real
redis-server of the test's own. Expiry is checked through the TTLs Redis holds, not by waiting."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ResumeConfig
from gateway.resume.redis_scripts import stream_keys
from gateway.resume.redis_store import DROPPED_TTL_MS, TOMBSTONE_TTL_MS, RedisResumeStore
from gateway.resume.store import OwnerLost, ResumeUnavailable, StreamExpired, StreamMeta
from tests.helpers import BOUND

GRACE = 2.0
EVENTS = [f"data: {{\"n\": {n}}}\n\n".encode() for n in range(1, 6)]


@pytest.fixture
async def make_store(redis_url):
    """Store instances on the test's Redis, started; closed at the end (closing twice is harmless)."""
    stores: list[RedisResumeStore] = []

    async def make(instance_id: str, *, heartbeat: float = 1.0, **options) -> RedisResumeStore:
        config = ResumeConfig(backend="redis", url=redis_url, **{"grace": GRACE, **options})
        store = RedisResumeStore(config, instance_id, heartbeat=heartbeat, block=0.1)
        await store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def stores(make_store):
    """A and B on the same Redis."""
    return await make_store("A"), await make_store("B")


def new_meta(owner: str = "A", key_id: str | None = "team") -> StreamMeta:
    return StreamMeta(secrets.token_urlsafe(16), key_id, "ab" * 32, owner, 1700000000.25)


async def opened(store: RedisResumeStore, *events: bytes, on_cancel=lambda: None) -> StreamMeta:
    meta = new_meta(store.instance_id)
    await store.open(meta, on_cancel)
    for seq, event in enumerate(events, 1):
        assert await store.append(meta.stream_id, seq, event)
    return meta


async def read_all(store: RedisResumeStore, stream_id: str, after: int = 0) -> list[tuple[int, bytes]]:
    async with asyncio.timeout(BOUND):
        return [item async for item in store.events(stream_id, after)]


async def read_until_owner_lost(store: RedisResumeStore, stream_id: str, after: int = 0) -> list[tuple[int, bytes]]:
    got = []
    with pytest.raises(OwnerLost):
        async with asyncio.timeout(BOUND):
            async for item in store.events(stream_id, after):
                got.append(item)
    return got


async def ttls(redis, stream_id: str) -> dict[str, int]:
    """PTTL of each of the stream's keys that exists: -1 would be a key kept forever."""
    found = {}
    for key in stream_keys(stream_id):
        ttl = await redis.pttl(key)
        if ttl != -2:
            found[key.rsplit(":", 1)[1]] = ttl
    return found


# ------------------------------------------------------------------------------------------- replay and live

async def test_b_replays_every_event_a_stored_exactly_once_in_order_then_ends(stores):
    a, b = stores
    meta = await opened(a, *EVENTS)
    await a.finish(meta.stream_id)
    assert await read_all(b, meta.stream_id) == list(enumerate(EVENTS, 1))
    assert await read_all(b, meta.stream_id) == list(enumerate(EVENTS, 1))  # a second resume, the same
    assert await b.meta(meta.stream_id) == meta


async def test_meta_of_open_access_has_no_key_id(stores):
    a, b = stores
    meta = new_meta(key_id=None)
    await a.open(meta, lambda: None)
    assert await b.meta(meta.stream_id) == meta
    assert await b.meta("unknown") is None


async def test_b_reads_live_while_a_appends(stores):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    reader = b.events(meta.stream_id, 0)
    async with asyncio.timeout(BOUND):
        assert await anext(reader) == (1, EVENTS[0])
        for seq, event in enumerate(EVENTS[1:], 2):
            waiting = asyncio.ensure_future(anext(reader))
            await asyncio.sleep(0.05)  # B blocks in XREAD meanwhile (not needed for the result)
            assert not waiting.done()
            assert await a.append(meta.stream_id, seq, event)
            assert await waiting == (seq, event)
        waiting = asyncio.ensure_future(anext(reader))
        await a.finish(meta.stream_id)
        with pytest.raises(StopAsyncIteration):
            await waiting


@pytest.mark.parametrize("after", [0, 1, 3, 5, 9])
async def test_after_n_gives_the_events_after_n(stores, after):
    a, b = stores
    meta = await opened(a, *EVENTS)
    await a.finish(meta.stream_id)
    assert await read_all(b, meta.stream_id, after) == list(enumerate(EVENTS, 1))[after:]


@st.composite
def events_and_after(draw):
    """Some events, and a seq to resume after: before the first, any of them, or past the last."""
    events = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=12))
    return events, draw(st.integers(-1, len(events) + 1))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=events_and_after(), finished_first=st.booleans())
async def test_any_appends_read_back_after_any_seq_give_exactly_the_tail(stores, case, finished_first):
    a, b = stores
    events, after = case
    meta = await opened(a, *events)
    if finished_first:
        await a.finish(meta.stream_id)
        got = await read_all(b, meta.stream_id, after)
    else:  # the reader may be on it before the end
        reading = asyncio.ensure_future(read_all(b, meta.stream_id, after))
        await a.finish(meta.stream_id)
        got = await reading
    assert got == list(enumerate(events, 1))[max(after, 0):]


# ----------------------------------------------------------------------------------------------- byte caps

async def test_past_its_byte_cap_a_stream_is_dropped_and_b_gets_stream_expired(make_store, redis):
    a, b = await make_store("A", max_bytes=10), await make_store("B", max_bytes=10)
    meta = await opened(a, b"1234", b"5678")
    assert not await a.append(meta.stream_id, 3, b"9ab")
    assert not await a.append(meta.stream_id, 4, b"c")  # dropped: no more, even within the cap
    assert a.total_bytes == 0
    with pytest.raises(StreamExpired):
        await read_all(b, meta.stream_id)
    assert await b.meta(meta.stream_id) == meta  # a tombstone: the late client is told 410, not 404
    assert await redis.xlen(stream_keys(meta.stream_id)[1]) == 1  # only the `end` entry is left
    left = await ttls(redis, meta.stream_id)
    assert 0 < left["events"] <= DROPPED_TTL_MS and DROPPED_TTL_MS < left["meta"] <= TOMBSTONE_TTL_MS


async def test_the_instance_total_caps_the_streams_it_owns_and_frees_what_they_held(make_store):
    a = await make_store("A", max_bytes=10, max_total_bytes=12)
    first = await opened(a, b"12345678")
    second = await opened(a, b"1234")
    assert a.total_bytes == 12
    assert not await a.append(second.stream_id, 2, b"5")
    assert a.total_bytes == 8
    await a.drop(first.stream_id)
    assert a.total_bytes == 0
    third = await opened(a, b"1234567890")
    assert await a.meta(third.stream_id) is not None


async def test_a_finished_stream_counts_against_the_total_until_its_grace_has_passed(make_store):
    a = await make_store("A", grace=0.0)
    meta = await opened(a, b"12345")
    await a.finish(meta.stream_id)
    assert a.total_bytes == 5
    await a.beat()  # grace 0: forgotten at the next beat
    assert a.total_bytes == 0


async def reading_live(a: RedisResumeStore, b: RedisResumeStore):
    """A stream A owns with one event, and B's reader of it past that event: the reader, and its wait for
    the next one (a future)."""
    meta = await opened(a, EVENTS[0])
    reader = b.events(meta.stream_id, 0)
    assert await anext(reader) == (1, EVENTS[0])
    return meta, reader, asyncio.ensure_future(anext(reader))


async def test_a_reader_waiting_on_a_stream_that_is_dropped_gets_stream_expired(stores):
    a, b = stores
    async with asyncio.timeout(BOUND):
        meta, _, waiting = await reading_live(a, b)
        await asyncio.sleep(0.05)
        await a.drop(meta.stream_id)
        with pytest.raises(StreamExpired):
            await waiting
    with pytest.raises(StreamExpired):
        await read_all(b, meta.stream_id)


# ------------------------------------------------------------------------------------------------- cancel

async def test_cancel_from_b_runs_as_on_cancel_through_the_subscription(make_store):
    a = await make_store("A", heartbeat=60.0)  # no beat in this test: only the message can tell A
    b = await make_store("B")
    cancelled = asyncio.Event()
    meta = await opened(a, EVENTS[0], on_cancel=cancelled.set)
    assert await b.cancel(meta.stream_id)
    async with asyncio.timeout(BOUND):
        await cancelled.wait()
    assert not await b.cancel("unknown")


async def test_a_cancel_whose_message_was_missed_is_seen_at_the_next_beat(stores, redis):
    a, b = stores
    calls = []
    meta = await opened(a, EVENTS[0], on_cancel=lambda: calls.append(1))
    await redis.hset(stream_keys(meta.stream_id)[0], "cancel", "1")  # the flag alone, as if the message was lost
    await a.beat()
    await a.beat()
    assert calls == [1]  # once


async def test_cancel_of_a_dropped_stream_is_false(stores):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    await a.drop(meta.stream_id)
    assert not await b.cancel(meta.stream_id)


async def test_a_finished_stream_whose_events_expired_is_a_tombstone(stores, redis):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    await a.finish(meta.stream_id)
    await redis.delete(stream_keys(meta.stream_id)[1])  # what its grace's expiry does
    assert await b.meta(meta.stream_id) == meta
    with pytest.raises(StreamExpired):
        await read_all(b, meta.stream_id)
    assert not await b.cancel(meta.stream_id)


# --------------------------------------------------------------------------------------------- owner lost

async def test_when_a_closes_before_finishing_b_gets_the_stored_events_then_owner_lost(stores):
    a, b = stores
    meta = await opened(a, *EVENTS[:3])
    await a.close()
    assert await read_until_owner_lost(b, meta.stream_id, 1) == list(enumerate(EVENTS[:3], 1))[1:]


@pytest.mark.parametrize("round_", range(5))
async def test_close_while_events_are_being_written_writes_them_all_first(make_store, round_):
    a, b = await make_store("A"), await make_store("B")
    first = await opened(a, EVENTS[0])  # on its way to Redis...
    second = await opened(a, *EVENTS[:2])  # ...while these wait for the next batch
    async with asyncio.timeout(BOUND):
        await a.close()
    assert await read_until_owner_lost(b, first.stream_id) == [(1, EVENTS[0])]
    assert await read_until_owner_lost(b, second.stream_id) == [(1, EVENTS[0]), (2, EVENTS[1])]


async def test_a_reader_live_on_a_stream_whose_owner_closes_gets_owner_lost(stores):
    a, b = stores
    async with asyncio.timeout(BOUND):
        meta, reader, waiting = await reading_live(a, b)
        assert await a.append(meta.stream_id, 2, EVENTS[1])
        await a.close()
        assert await waiting == (2, EVENTS[1])
        with pytest.raises(OwnerLost):
            await anext(reader)


async def test_an_owner_that_died_is_lost_once_its_owner_key_expired(stores, redis):
    a, b = stores
    meta = await opened(a, *EVENTS[:2])
    owner_key = stream_keys(meta.stream_id)[2]
    assert 0 < await redis.pttl(owner_key) <= a.owner_ttl_ms  # three beats, refreshed by each beat
    await redis.delete(owner_key)  # what its expiry does once A stops beating
    with pytest.raises(OwnerLost):
        await read_all(b, meta.stream_id)
    await a.beat()  # the beat puts it back while A is alive
    assert await redis.get(owner_key) == b"A"


async def test_a_finished_stream_is_not_owner_lost_after_its_owner_left(stores):
    a, b = stores
    meta = await opened(a, *EVENTS)
    await a.finish(meta.stream_id)
    await a.close()
    assert await read_all(b, meta.stream_id) == list(enumerate(EVENTS, 1))


# ---------------------------------------------------------------------------------------- readers and TTLs

async def test_has_readers_sees_a_reader_on_another_instance(stores, redis):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    assert not await a.has_readers(meta.stream_id)
    reader = b.events(meta.stream_id, 0)
    async with asyncio.timeout(BOUND):
        assert await anext(reader) == (1, EVENTS[0])
        assert await a.has_readers(meta.stream_id)
        assert 0 < await redis.pttl(stream_keys(meta.stream_id)[3]) <= b.reader_ttl_ms
        await b.beat()
        assert await a.has_readers(meta.stream_id)
        await reader.aclose()
    assert not await a.has_readers(meta.stream_id)


async def test_every_key_of_a_stream_has_a_ttl_at_every_step(stores, redis):
    a, b = stores
    meta = await opened(a, *EVENTS[:2])
    await a.flush()
    live = await ttls(redis, meta.stream_id)
    assert set(live) == {"meta", "events", "owner"}
    assert a.grace_ms < live["meta"] <= a.live_ttl_ms and a.grace_ms < live["events"] <= a.live_ttl_ms
    assert 0 < live["owner"] <= a.owner_ttl_ms
    await a.beat()
    assert all(ttl > 0 for ttl in (await ttls(redis, meta.stream_id)).values())
    await a.finish(meta.stream_id)
    finished = await ttls(redis, meta.stream_id)
    assert set(finished) == {"meta", "events"}  # no owner key once finished
    assert 0 < finished["events"] <= a.grace_ms
    assert a.grace_ms < finished["meta"] <= a.grace_ms + TOMBSTONE_TTL_MS  # its tombstone outlives the events
    await a.drop(meta.stream_id)
    dropped = await ttls(redis, meta.stream_id)
    assert 0 < dropped["events"] <= DROPPED_TTL_MS and 0 < dropped["meta"] <= TOMBSTONE_TTL_MS


async def test_a_closed_instance_leaves_its_live_streams_to_expire_after_grace(stores, redis):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    await a.close()  # writes what was pending first
    left = await ttls(redis, meta.stream_id)
    assert set(left) == {"meta", "events"}
    assert all(0 < ttl <= a.grace_ms for ttl in left.values())


async def test_a_write_redis_refuses_drops_the_stream(stores):
    a, b = stores
    meta = await opened(a, *EVENTS[:2])
    assert await a.append(meta.stream_id, 2, EVENTS[2])  # seq 2 again: XADD refuses it
    await a.flush()
    assert not await a.append(meta.stream_id, 3, EVENTS[3])
    with pytest.raises(StreamExpired):
        await read_all(b, meta.stream_id)


async def test_what_cannot_be_a_stream_id_is_unknown_and_names_no_key(stores, redis):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    await a.finish(meta.stream_id)
    for bad in (meta.stream_id + "}", "a" * 129, "", "é", "x:y", meta.stream_id + "\n"):
        assert await b.meta(bad) is None
        assert not await b.cancel(bad)
        assert not await b.has_readers(bad)
        with pytest.raises(StreamExpired):
            await read_all(b, bad)
    assert await b.meta(meta.stream_id) == meta
    with pytest.raises(ValueError):
        await a.open(StreamMeta("a}b", None, "ab" * 32, "A", 0.0), lambda: None)


async def test_many_streams_appended_together_all_read_back_whole(stores):
    a, b = stores
    metas = [await opened(a) for _ in range(20)]
    for seq, event in enumerate(EVENTS, 1):  # no wait between appends: they go to Redis in batches
        for meta in metas:
            assert await a.append(meta.stream_id, seq, event)
    await asyncio.gather(*(a.finish(meta.stream_id) for meta in metas))
    for meta in metas:
        assert await read_all(b, meta.stream_id) == list(enumerate(EVENTS, 1))


# ------------------------------------------------------------------------------------------ Redis failing

async def test_when_redis_fails_appends_are_false_and_readers_get_resume_unavailable(stores, redis_server, caplog):
    a, b = stores
    meta = await opened(a, EVENTS[0])
    await a.flush()
    redis_server.stop()
    await a.append(meta.stream_id, 2, EVENTS[1])  # queued: append does not wait for Redis
    await a.flush()  # the write failed: the stream was dropped
    assert not await a.append(meta.stream_id, 3, EVENTS[2])  # no exception: the live stream goes on
    await a.finish(meta.stream_id)
    late = new_meta()
    with pytest.raises(ResumeUnavailable):  # the request that asked for it is told 503 resume_unavailable
        await a.open(late, lambda: None)
    assert not await a.append(late.stream_id, 1, EVENTS[0])
    with pytest.raises(ResumeUnavailable):
        await b.meta(meta.stream_id)
    assert not await b.has_readers(meta.stream_id)
    with pytest.raises(ResumeUnavailable):
        await b.cancel(meta.stream_id)
    with pytest.raises(ResumeUnavailable):
        await read_all(b, meta.stream_id)
    assert a.total_bytes == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.resume"]
    assert len([line for line in lines if "failed" in line]) == 2  # one per instance, not one per call
