"""Resumable streams with the memory backend, over real sockets: a client drops mid-stream and resumes
from its last event id, every event exactly once; nobody resuming cancels the upstream after the grace;
the byte caps, DELETE, who may resume, the token kept out of logs, limits counted once, and a stream that
is not resumable left byte for byte as it was.

The fake upstream holds its answer behind an asyncio.Event, so that a test drops its client at a known
point of the stream with no timing involved."""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from gateway.appkeys import LIVE
from gateway.pipeline.ratelimit import estimate_tokens
from gateway.resume.memory_store import MemoryResumeStore
from gateway.resume.service import RESUME
from gateway.resume.store import StreamExpired, StreamMeta
from tests.fakes.upstream import HANG, Reply, Wait, chat_chunk, sse
from tests.helpers import (BOUND, CHAT, ROLE, assert_nothing_left, assert_openai_error, bearer, digest, gateway_tasks,
                           text_of)

KEY = "gwk-resume-owner-0123456789abcdef"
OTHER = "gwk-resume-other-0123456789abcdef"
ALWAYS = "gwk-resume-always-0123456789abcdef"
COUNTED = "gwk-resume-counted-0123456789abcdef"
SOLO = "gwk-resume-solo-0123456789abcdef"
KEYS = f"""keys:
  - {{id: owner, sha256: {digest(KEY)}}}
  - {{id: other, sha256: {digest(OTHER)}}}
  - {{id: always, sha256: {digest(ALWAYS)}, resumable: true}}
  - {{id: counted, sha256: {digest(COUNTED)}, limits: {{requests_per_minute: 3, tokens_per_minute: 5000}}}}
  - {{id: solo, sha256: {digest(SOLO)}, limits: {{concurrent_streams: 1}}}}
"""
RESUMABLE = {**CHAT, "stream_options": {"resumable": True}}
BEFORE = ("Once", " upon")  # sent before the gate
AFTER = (" a", " time", " there", " was", " a", " stream.")  # held until the test opens the gate
TEXT = "".join(BEFORE + AFTER)
USAGE = chat_chunk(choices=[], usage={"prompt_tokens": 2, "completion_tokens": 48, "total_tokens": 50})
EVENT_ID = re.compile(rb"^id: ([A-Za-z0-9_-]+)\.([0-9]+)\n")


def resume_config(grace: float = 10, max_bytes: int = 1 << 20, max_total_bytes: int = 1 << 24) -> str:
    return f"resume: {{grace: {grace}, max_bytes: {max_bytes}, max_total_bytes: {max_total_bytes}}}\n"


def gated(gate: asyncio.Event, tail: list | None = None) -> Reply:
    """Role and BEFORE, then (once `gate` is set) AFTER, the finish and the usage."""
    steps: list = [sse(ROLE, *(chat_chunk({"content": text}) for text in BEFORE), done=False), Wait(gate)]
    steps += tail if tail is not None else [
        sse(*(chat_chunk({"content": text}) for text in AFTER), chat_chunk({}, "stop"), USAGE)]
    return Reply(steps=steps)


@pytest.fixture
async def resuming(make_gateway):
    return await make_gateway(extra=KEYS + resume_config())


async def next_event(response) -> bytes:
    """One event (or comment) of a stream, with its blank line."""
    async with asyncio.timeout(BOUND):
        return await response.content.readuntil(b"\n\n")


async def read_until_text(response, text: str) -> list[bytes]:
    events: list[bytes] = []
    while text_of([e[e.index(b"data: "):] for e in events if b"data: " in e]) != text:
        events.append(await next_event(response))
    return events


async def rest(response) -> list[bytes]:
    """The events (and comments) up to the end of the response."""
    async with asyncio.timeout(BOUND):
        body = await response.read()
    return [block + b"\n\n" for block in body.split(b"\n\n") if block]


def data(events: list[bytes]) -> list[bytes]:
    """Each event without its id line."""
    return [EVENT_ID.sub(b"", event) for event in events]


def numbers(events: list[bytes], stream_id: str) -> list[int]:
    found = []
    for event in events:
        match = EVENT_ID.match(event)
        assert match is not None, event
        assert match.group(1).decode() == stream_id
        found.append(int(match.group(2)))
    return found


async def start(gateway, key: str = KEY, body: dict | None = None, headers: dict | None = None):
    response = await gateway.post("/v1/chat/completions", json=body or RESUMABLE, headers={**bearer(key), **(headers or {})})
    assert response.status == 200, await response.text()
    return response


async def dropped_after_before(gateway, upstream, gate: asyncio.Event, key: str = KEY):
    """A resumable stream whose client read BEFORE and went away: its id, token and events read."""
    upstream.queue(gated(gate))
    response = await start(gateway, key)
    stream_id, token = response.headers["X-Stream-Id"], response.headers["X-Stream-Token"]
    head = await read_until_text(response, "".join(BEFORE))
    response.close()
    return stream_id, token, head


async def full_replay(gateway, stream_id: str) -> list[bytes]:
    response = await gateway.get(f"/v2/streams/{stream_id}", headers=bearer(KEY))
    assert response.status == 200
    return await rest(response)


def assert_whole(events: list[bytes], stream_id: str) -> None:
    """Every event once, numbered 1..n in order, the whole text, [DONE] last."""
    assert numbers(events, stream_id) == list(range(1, len(events) + 1))
    assert text_of(data(events)) == TEXT
    assert data(events)[-1] == b"data: [DONE]\n\n"


@pytest.mark.parametrize("how", ["Last-Event-ID", "after"])
async def test_a_dropped_stream_resumes_from_its_last_event_every_event_once(resuming, upstream, how):
    gate = asyncio.Event()
    stream_id, _, head = await dropped_after_before(resuming, upstream, gate)
    gate.set()  # the upstream goes on while nobody reads: into the store
    last = head[-1].split(b"\n", 1)[0][len(b"id: "):].decode()
    if how == "Last-Event-ID":
        response = await resuming.get(f"/v2/streams/{stream_id}", headers={**bearer(KEY), "Last-Event-ID": last})
    else:
        response = await resuming.get(f"/v2/streams/{stream_id}?after={last.rpartition('.')[2]}", headers=bearer(KEY))
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["X-Stream-Id"] == stream_id
    assert "X-Stream-Token" not in response.headers  # given once, to the request that started it
    tail = await rest(response)
    assert_whole(head + tail, stream_id)
    assert head + tail == await full_replay(resuming, stream_id)  # the same bytes, from wherever one resumes
    assert upstream.completed == 1 and upstream.cut_off == 0  # read to its end while the client was away
    await assert_nothing_left(resuming, upstream)


async def test_a_resume_reads_live_events_as_they_come_then_done(resuming, upstream):
    gate = asyncio.Event()
    stream_id, _, head = await dropped_after_before(resuming, upstream, gate)
    response = await resuming.get(f"/v2/streams/{stream_id}", headers={**bearer(KEY), "Last-Event-ID": f"{stream_id}.3"})
    assert response.status == 200  # committed before the next event exists: past the keep-alive, or with it
    gate.set()
    tail = await rest(response)
    assert_whole(head + tail, stream_id)


async def test_an_attached_client_gets_ids_and_the_replay_is_its_bytes(resuming, upstream):
    gate = asyncio.Event()
    gate.set()
    upstream.queue(gated(gate))
    response = await start(resuming)
    stream_id = response.headers["X-Stream-Id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", stream_id)
    assert len(response.headers["X-Stream-Token"]) >= 43
    events = await rest(response)
    assert_whole(events, stream_id)
    assert events == await full_replay(resuming, stream_id)
    # a client that has it all: EventSource's reconnect after [DONE] is told to stop (204)
    done = await resuming.get(f"/v2/streams/{stream_id}", headers={**bearer(KEY), "Last-Event-ID": f"{stream_id}.{len(events)}"})
    assert done.status == 204


async def test_a_stream_not_resumable_is_byte_for_byte_what_it_was(resuming, upstream):
    """The same upstream bytes with and without the feature: no id line, no stream headers, no store
    entry; the resumable one differs only by its id lines."""
    for _ in range(2):
        gate = asyncio.Event()
        gate.set()
        upstream.queue(gated(gate))
    plain = await resuming.post("/v1/chat/completions", json=CHAT, headers=bearer(KEY))
    plain_body = await plain.read()
    resumes = resuming.server.app[RESUME]
    assert not resumes.relays and not resumes.store._streams and not resumes.store._tombstones
    assert "X-Stream-Id" not in plain.headers and "X-Stream-Token" not in plain.headers
    assert b"id:" not in plain_body
    resumable = await start(resuming)
    events = await rest(resumable)
    assert b"".join(data(events)) == plain_body
    assert plain_body.endswith(b"data: [DONE]\n\n") and text_of(await_split(plain_body)) == TEXT


def await_split(body: bytes) -> list[bytes]:
    return [block for block in body.split(b"\n\n") if block]


async def test_nobody_resuming_within_the_grace_cancels_the_upstream_then_410(make_gateway, upstream, caplog):
    caplog.set_level(logging.INFO)
    gateway = await make_gateway(extra=KEYS + resume_config(grace=0.2))
    gate = asyncio.Event()
    stream_id, token, _ = await dropped_after_before(gateway, upstream, gate)
    async with asyncio.timeout(BOUND):
        await upstream.cut_off_event.wait()  # the gateway closed the upstream: the fake saw it go
    await assert_nothing_left(gateway, upstream)
    for headers, query in ((bearer(KEY), ""), ({}, f"?token={token}")):
        late = await gateway.get(f"/v2/streams/{stream_id}{query}", headers=headers)
        assert late.status == 410
        assert assert_openai_error(await late.json())["code"] == "stream_expired"
    origin = [r.access_fields() for r in caplog.records if r.name == "gateway.access" and r.access_fields()["stream_id"]]
    assert (origin[0]["outcome"], origin[0]["resume"], origin[0]["endpoint"]) == ("client_disconnected", "abandoned", "chat")


async def test_a_stream_that_finished_into_the_store_logs_ok_detached(resuming, upstream, caplog):
    caplog.set_level(logging.INFO)
    gate = asyncio.Event()
    stream_id, _, head = await dropped_after_before(resuming, upstream, gate)
    gate.set()
    response = await resuming.get(f"/v2/streams/{stream_id}?after=3", headers=bearer(KEY))
    await rest(response)
    await assert_nothing_left(resuming, upstream)
    lines = [r.access_fields() for r in caplog.records if r.name == "gateway.access" and r.access_fields()["stream_id"]]
    by_endpoint = {line["endpoint"]: line for line in lines}
    assert (by_endpoint["chat"]["outcome"], by_endpoint["chat"]["resume"]) == ("ok", "detached")
    assert by_endpoint["chat"]["completion_tokens"] == 48  # usage, once, on the line of the request that paid
    assert (by_endpoint["streams"]["outcome"], by_endpoint["streams"]["key"]) == ("ok", "owner")


async def test_past_the_byte_cap_a_live_client_keeps_streaming_and_a_resume_gets_410(make_gateway, upstream):
    gateway = await make_gateway(extra=KEYS + resume_config(max_bytes=700))
    gate = asyncio.Event()
    gate.set()
    upstream.queue(gated(gate))
    response = await start(gateway)
    stream_id = response.headers["X-Stream-Id"]
    events = await rest(response)
    assert_whole(events, stream_id)  # the client that stayed lost nothing
    assert sum(map(len, events)) > 700
    late = await gateway.get(f"/v2/streams/{stream_id}", headers=bearer(KEY))
    assert late.status == 410 and (await late.json())["error"]["code"] == "stream_expired"


async def test_past_the_byte_cap_with_the_client_gone_the_upstream_is_cancelled(make_gateway, upstream):
    gateway = await make_gateway(extra=KEYS + resume_config(max_bytes=1200))
    gate = asyncio.Event()
    upstream.queue(gated(gate, tail=[sse(*(chat_chunk({"content": text}) for text in AFTER), done=False), HANG]))
    response = await start(gateway)
    stream_id = response.headers["X-Stream-Id"]
    head = await read_until_text(response, "".join(BEFORE))
    response.close()
    assert sum(map(len, head)) < 1200
    gate.set()  # AFTER is more than the cap holds, and the upstream would go on
    async with asyncio.timeout(BOUND):
        await upstream.cut_off_event.wait()
    late = await gateway.get(f"/v2/streams/{stream_id}", headers=bearer(KEY))
    assert late.status == 410
    await assert_nothing_left(gateway, upstream)


async def test_the_instance_total_cap_is_shared_by_its_streams(make_gateway, upstream):
    gateway = await make_gateway(extra=KEYS + resume_config(max_bytes=1000, max_total_bytes=1000))
    gates = [asyncio.Event(), asyncio.Event()]
    first = await dropped_after_before(gateway, upstream, gates[0])
    second = await dropped_after_before(gateway, upstream, gates[1])
    assert gateway.server.app[RESUME].store.total_bytes <= 1000
    for gate in gates:
        gate.set()
    async with asyncio.timeout(BOUND):
        while upstream.active:  # one of them goes over the instance's total: cancelled; the other finishes
            await asyncio.sleep(0.02)
    statuses = sorted([(await gateway.get(f"/v2/streams/{sid}", headers=bearer(KEY))).status for sid, _, _ in (first, second)])
    assert 410 in statuses
    assert gateway.server.app[RESUME].store.total_bytes <= 1000


async def test_delete_cancels_the_upstream_and_ends_the_stream_with_an_error_event(resuming, upstream):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Once"}), done=False), HANG]))
    response = await start(resuming)
    stream_id = response.headers["X-Stream-Id"]
    await read_until_text(response, "Once")
    stopped = await resuming.delete(f"/v2/streams/{stream_id}", headers=bearer(KEY))
    assert stopped.status == 204
    async with asyncio.timeout(BOUND):
        await upstream.cut_off_event.wait()
    tail = await rest(response)  # the client still attached is told why its stream ended
    error = orjson.loads(data(tail)[0][len(b"data: "):])
    assert assert_openai_error(error)["code"] == "stream_cancelled"
    assert data(tail)[-1] == b"data: [DONE]\n\n"
    replay = await full_replay(resuming, stream_id)
    assert data(replay)[-2:] == data(tail)
    await assert_nothing_left(resuming, upstream)


async def test_delete_with_the_token_from_a_page_and_of_unknown_streams(resuming, upstream):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Once"}), done=False), HANG]))
    response = await start(resuming)
    stream_id, token = response.headers["X-Stream-Id"], response.headers["X-Stream-Token"]
    assert (await resuming.delete(f"/v2/streams/{stream_id}?token=wrong{token}")).status == 404
    assert (await resuming.delete(f"/v2/streams/{stream_id}", headers=bearer(OTHER))).status == 404
    assert (await resuming.delete(f"/v2/streams/{stream_id}?token={token}")).status == 204
    async with asyncio.timeout(BOUND):
        await upstream.cut_off_event.wait()
    await rest(response)
    unknown = await resuming.delete("/v2/streams/nosuchstream0123456789", headers=bearer(KEY))
    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "stream_not_found"


async def test_only_the_key_that_started_it_or_its_token_may_resume(resuming, upstream):
    gate = asyncio.Event()
    stream_id, token, _ = await dropped_after_before(resuming, upstream, gate)
    url = f"/v2/streams/{stream_id}"
    unknown = await resuming.get("/v2/streams/nosuchstream0123456789", headers=bearer(KEY))
    assert unknown.status == 404
    unknown_body = await unknown.json()
    assert assert_openai_error(unknown_body)["code"] == "stream_not_found"
    for headers, query in ((bearer(OTHER), ""), ({}, "?token=" + token[:-2]), (bearer(KEY), "?token=nope"),
                           ({"X-Stream-Token": token + "x"}, "")):
        refused = await resuming.get(url + query, headers=headers)
        assert refused.status == 404, (headers, query)
        assert await refused.json() == unknown_body  # the same answer as for a stream that never was
    missing = await resuming.get(url)
    assert missing.status == 401 and (await missing.json())["error"]["code"] == "missing_api_key"
    bad = await resuming.get(url, headers={**bearer(KEY), "Last-Event-ID": "otherstream.3"})
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "Last-Event-ID"
    bad = await resuming.get(url + "?after=-1", headers=bearer(KEY))
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "after"
    gate.set()
    for headers, query in (({}, f"?token={token}&after=3"), ({"X-Stream-Token": token}, "?after=3")):
        allowed = await resuming.get(url + query, headers=headers)
        assert allowed.status == 200
        assert text_of(data(await rest(allowed))) == "".join(AFTER)


async def test_the_token_is_in_no_log_line(resuming, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    gate = asyncio.Event()
    stream_id, token, _ = await dropped_after_before(resuming, upstream, gate)
    gate.set()
    response = await resuming.get(f"/v2/streams/{stream_id}?token={token}&after=1")
    await rest(response)
    await resuming.get(f"/v2/streams/{stream_id}?token={token}x")
    await resuming.delete(f"/v2/streams/{stream_id}?token={token}")
    await assert_nothing_left(resuming, upstream)
    assert any(r.name == "gateway.access" and stream_id in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert token not in record.getMessage()
        assert token not in str(getattr(record, "access_fields", lambda: "")())
    assert token not in caplog.text


async def test_the_header_and_the_key_make_a_stream_resumable(resuming, upstream):
    for _ in range(5):
        gate = asyncio.Event()
        gate.set()
        upstream.queue(gated(gate))
    by_header = await start(resuming, body=CHAT, headers={"X-Gateway-Resumable": "1"})
    assert numbers(await rest(by_header), by_header.headers["X-Stream-Id"])[0] == 1
    by_key = await start(resuming, key=ALWAYS, body=CHAT)
    assert numbers(await rest(by_key), by_key.headers["X-Stream-Id"])[0] == 1
    declined = await start(resuming, key=ALWAYS, body={**CHAT, "stream_options": {"resumable": False}})
    assert "X-Stream-Id" not in declined.headers and b"id:" not in await declined.read()
    header_off = await start(resuming, key=ALWAYS, body=CHAT, headers={"X-Gateway-Resumable": "0"})
    assert "X-Stream-Id" not in header_off.headers and b"id:" not in await header_off.read()
    not_asked = await start(resuming, body=CHAT)
    assert "X-Stream-Id" not in not_asked.headers
    await not_asked.read()
    bad = await resuming.post("/v1/chat/completions", json=CHAT, headers={**bearer(KEY), "X-Gateway-Resumable": "maybe"})
    assert bad.status == 400 and assert_openai_error(await bad.json())["param"] == "X-Gateway-Resumable"
    bad = await resuming.post("/v1/chat/completions", json={**CHAT, "stream_options": {"resumable": "yes"}},
                              headers=bearer(KEY))
    assert bad.status == 400


async def test_a_resume_counts_no_request_no_tokens_and_no_stream_slot(resuming, upstream):
    limiter = resuming.server.app[LIVE].current.limiter
    limiter.clock = lambda: 1000.0  # budgets stand still: every figure exact
    gate = asyncio.Event()
    stream_id, _, _ = await dropped_after_before(resuming, upstream, gate, key=COUNTED)
    gate.set()
    for _ in range(2):
        replay = await resuming.get(f"/v2/streams/{stream_id}", headers=bearer(COUNTED))
        assert replay.status == 200 and text_of(data(await rest(replay))) == TEXT
    upstream.queue(gated(gate))
    second = await start(resuming, key=COUNTED, body=RESUMABLE)
    await rest(second)
    assert second.headers["x-ratelimit-remaining-requests"] == "1"  # 3 - the two POSTs: the GETs are free
    # 5000 - the first stream's 50 tokens, settled once - the second's estimate on its admission
    assert second.headers["x-ratelimit-remaining-tokens"] == str(5000 - 50 - estimate_tokens(RESUMABLE))


async def test_a_detached_stream_keeps_its_slot_and_its_resume_takes_none(resuming, upstream):
    gate = asyncio.Event()
    stream_id, _, _ = await dropped_after_before(resuming, upstream, gate, key=SOLO)
    busy = await resuming.post("/v1/chat/completions", json=RESUMABLE, headers=bearer(SOLO))
    assert busy.status == 429  # the upstream is still read for the client that left: its slot is taken
    assert (await busy.json())["error"]["type"] == "concurrent_streams"
    resumed = await resuming.get(f"/v2/streams/{stream_id}?after=3", headers=bearer(SOLO))
    assert resumed.status == 200  # the owner's slot covers the resume
    gate.set()
    assert text_of(data(await rest(resumed))) == "".join(AFTER)
    await assert_nothing_left(resuming, upstream)
    upstream.queue(gated(gate))
    again = await start(resuming, key=SOLO)
    await rest(again)


async def test_an_upstream_error_after_the_drop_is_replayed_as_an_error_event(resuming, upstream):
    gate = asyncio.Event()
    upstream.queue(gated(gate, tail=[b"data: {\"error\": {\"message\": \"overloaded\", \"type\": \"server_error\"}}\n\n"]))
    response = await start(resuming)
    stream_id = response.headers["X-Stream-Id"]
    head = await read_until_text(response, "".join(BEFORE))
    response.close()
    gate.set()
    replay = await resuming.get(f"/v2/streams/{stream_id}?after={len(head)}", headers=bearer(KEY))
    tail = await rest(replay)
    assert numbers(tail, stream_id) == list(range(len(head) + 1, len(head) + len(tail) + 1))
    assert b'"error"' in data(tail)[0] and data(tail)[-1] == b"data: [DONE]\n\n"


async def test_a_failure_before_the_first_byte_is_still_its_status(resuming, upstream):
    upstream.queue(Reply(status=429, steps=[b'{"error": {"message": "slow down", "type": "rate_limit"}}'],
                         headers={"Content-Type": "application/json"}))
    response = await resuming.post("/v1/chat/completions", json=RESUMABLE, headers=bearer(KEY))
    assert response.status == 429 and "X-Stream-Id" not in response.headers
    assert not resuming.server.app[RESUME].relays
    await assert_nothing_left(resuming, upstream)


# ---------------------------------------------------------------------------------- the memory store alone

def meta(stream_id: str = "s1") -> StreamMeta:
    return StreamMeta(stream_id, "owner", "0" * 64, "here", 0.0)


async def collect(store: MemoryResumeStore, stream_id: str, after: int) -> tuple[list[int], bool]:
    seen, expired = [], False
    try:
        async for seq, _ in store.events(stream_id, after):
            seen.append(seq)
    except StreamExpired:
        expired = True
    return seen, expired


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), max_size=30), cap=st.integers(1, 3000), total=st.integers(1, 3000),
       after=st.integers(0, 35), reader_first=st.booleans())
def test_the_memory_store_keeps_a_prefix_within_its_caps_and_readers_see_it_in_order(sizes, cap, total, after,
                                                                                     reader_first):
    async def scenario() -> None:
        store = MemoryResumeStore(grace=0.0, max_bytes=cap, max_total_bytes=total)
        await store.open(meta(), lambda: None)
        reader = asyncio.create_task(collect(store, "s1", after)) if reader_first else None
        await asyncio.sleep(0)
        kept = 0
        for seq, size in enumerate(sizes, 1):
            if not await store.append("s1", seq, b"x" * size):
                break
            kept += 1
            assert store.total_bytes <= min(cap, total)
            await asyncio.sleep(0)
        if kept == len(sizes):
            await store.finish("s1")
        if reader is None:
            reader = asyncio.create_task(collect(store, "s1", after))
        seen, expired = await asyncio.wait_for(reader, BOUND)
        assert seen == list(range(after + 1, after + 1 + len(seen)))  # in order, no gap, no repeat
        if kept == len(sizes):
            assert not expired and seen == list(range(after + 1, len(sizes) + 1))
        else:
            assert expired and store.total_bytes == 0
            assert (await store.meta("s1")) is not None  # its tombstone: a late client is told 410
        await store.close()
        assert store.total_bytes == 0

    asyncio.run(scenario())


async def test_the_memory_store_frees_a_finished_stream_after_the_grace_but_not_while_read():
    store = MemoryResumeStore(grace=0.05, max_bytes=100, max_total_bytes=100)
    await store.open(meta(), lambda: None)
    await store.append("s1", 1, b"a")
    events = store.events("s1", 0)
    assert await anext(events) == (1, b"a")
    await store.finish("s1")
    await asyncio.sleep(0.2)  # several graces: a reader holds it
    assert await store.has_readers("s1") and store.total_bytes == 1
    await events.aclose()
    async with asyncio.timeout(BOUND):
        while store.total_bytes:
            await asyncio.sleep(0.02)
    seen, expired = await collect(store, "s1", 0)
    assert expired and not seen
    assert not await store.cancel("s1")


async def test_shutdown_ends_a_stream_read_for_a_client_that_left(make_gateway, upstream):
    gateway = await make_gateway(extra=KEYS + resume_config())
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Once"}), done=False), HANG]))
    response = await start(gateway)
    await read_until_text(response, "Once")
    response.close()
    resumes = gateway.server.app[RESUME]
    stream_id = response.headers["X-Stream-Id"]
    async with asyncio.timeout(BOUND):
        while resumes.relays[stream_id].attached:
            await asyncio.sleep(0.02)
        ended = asyncio.ensure_future(anext(resumes.store.events(stream_id, 2)))  # a reader of what is stored
        await gateway.close()  # nobody waits for this stream: it ends at once, not at the shutdown grace's end
        assert upstream.cut_off == 1
        seq, last = await ended
    assert b'"code":"server_shutting_down"' in last  # its last words, for a client resuming elsewhere
    assert gateway_tasks() == []
