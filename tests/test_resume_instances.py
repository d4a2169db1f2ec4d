"""Resumable streams across instances, end to end: two `gateway serve` processes (A and B) with
`resume.backend: redis` on one real redis-server, in front of one fake upstream. A client drops from A
and resumes on B, and gets every event once, in order, then [DONE]; A killed with SIGKILL while B's
client reads gives that client what reached Redis, then `upstream_owner_lost`; DELETE on B stops the
upstream that A reads; a stream nobody resumed is a 410 on B, not a 404; Redis down is a 503; and a
stream that did not ask to be resumable leaves nothing in Redis.

The fake upstream holds its answer behind an asyncio.Event, so that each step happens at a known point
of the stream with no timing involved."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.helpers import BOUND, CHAT, FAKE_KEY, bearer, digest, free_port, text_of
from tests.serving import served
from tests.test_resume import AFTER, BEFORE, EVENT_ID, RESUMABLE, TEXT, data, gated, next_event, numbers, rest

KEY = "gwk-instances-resume-0123456789abcdef"
OTHER = "gwk-instances-other-0123456789abcdef"


def instance_config(upstream_url: str, port: int, redis_url: str, grace: float) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}, shutdown_grace: 2}}
providers:
  - name: up
    kind: openai
    base_url: {upstream_url}/v1
    api_key: {FAKE_KEY}
    models: [gpt-4o-mini]
    timeouts: {{connect: 2, first_byte: 5, idle: 20, total: 60}}
    retry: {{attempts: 1}}
keys:
  - {{id: owner, sha256: {digest(KEY)}}}
  - {{id: other, sha256: {digest(OTHER)}}}
resume: {{backend: redis, url: "{redis_url}", grace: {grace}}}
"""


class Instances:
    def __init__(self, session: aiohttp.ClientSession, urls: dict[str, str],
                 processes: dict[str, object]) -> None:
        self.session = session
        self.urls = urls
        self.processes = processes

    async def start(self, on: str, body: dict | None = None) -> aiohttp.ClientResponse:
        response = await self.session.post(f"{self.urls[on]}/v1/chat/completions", json=body or RESUMABLE,
                                           headers=bearer(KEY))
        assert response.status == 200, await response.text()
        return response

    async def resume(self, on: str, stream_id: str, *, headers: dict | None = None,
                     query: str = "") -> aiohttp.ClientResponse:
        return await self.session.get(f"{self.urls[on]}/v2/streams/{stream_id}{query}",
                                      headers=headers if headers is not None else bearer(KEY))


@contextlib.asynccontextmanager
async def two_instances(upstream, redis_url: str, tmp_path, grace: float = 10) -> AsyncIterator[Instances]:
    ports = {"a": free_port(), "b": free_port()}
    async with contextlib.AsyncExitStack() as stack:
        processes = {}
        for name, port in ports.items():
            directory = tmp_path / name
            directory.mkdir()
            process, _ = await stack.enter_async_context(
                served(instance_config(upstream.url, port, redis_url, grace), port, directory))
            processes[name] = process
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield Instances(session, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, processes)


async def read_before(response: aiohttp.ClientResponse) -> list[bytes]:
    """The stream's events up to the end of BEFORE (all the upstream sends before its gate)."""
    events: list[bytes] = []
    while text_of(data(events)) != "".join(BEFORE):
        events.append(await next_event(response))
    return events


async def dropped_from_a(gateways: Instances) -> tuple[str, str, list[bytes]]:
    """A resumable stream started on A whose client read BEFORE and went away: its id, token and events read."""
    first = await gateways.start("a")
    stream_id, token = first.headers["X-Stream-Id"], first.headers["X-Stream-Token"]
    head = await read_before(first)
    first.close()  # the train enters the tunnel
    return stream_id, token, head


async def read_after_commit(response: aiohttp.ClientResponse) -> list[bytes]:
    """The events of a resumed stream to its end, keep-alive comments left out."""
    return [event for event in await rest(response) if not event.startswith(b":")]


@pytest.mark.parametrize("how", ["key and Last-Event-ID", "token and after"])
async def test_a_client_that_drops_from_a_resumes_on_b_and_gets_every_event_once(upstream, redis_url, tmp_path, how):
    gate = asyncio.Event()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path) as gateways:
        stream_id, token, head = await dropped_from_a(gateways)
        last = numbers(head, stream_id)[-1]
        if how == "key and Last-Event-ID":
            resumed = await gateways.resume("b", stream_id, headers={**bearer(KEY), "Last-Event-ID": f"{stream_id}.{last}"})
        else:
            resumed = await gateways.resume("b", stream_id, headers={}, query=f"?token={token}&after={last}")
        assert resumed.status == 200, await resumed.text()
        assert resumed.headers["X-Stream-Id"] == stream_id
        gate.set()  # A still reads the upstream; B follows it live through Redis
        tail = await read_after_commit(resumed)
    events = head + tail
    assert numbers(events, stream_id) == list(range(1, len(events) + 1))  # every event once, in order
    assert text_of(data(events)) == TEXT
    assert data(events)[-1] == b"data: [DONE]\n\n"
    assert upstream.completed == 1 and len(upstream.received) == 1  # asked once, read to its end


async def test_a_finished_stream_replays_whole_on_b_with_the_bytes_a_sent(upstream, redis_url, tmp_path):
    gate = asyncio.Event()
    gate.set()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path) as gateways:
        first = await gateways.start("a")
        stream_id = first.headers["X-Stream-Id"]
        sent = await rest(first)  # the client stayed to the end
        replayed = await gateways.resume("b", stream_id)
        assert replayed.status == 200
        assert await read_after_commit(replayed) == sent
        done = await gateways.resume("b", stream_id, headers={**bearer(KEY), "Last-Event-ID": f"{stream_id}.{len(sent)}"})
        assert done.status == 204  # nothing after the last event: EventSource stops reconnecting


async def test_when_the_owner_is_killed_the_resumer_gets_what_reached_redis_then_owner_lost(upstream, redis_url,
                                                                                             tmp_path):
    gate = asyncio.Event()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path) as gateways:
        stream_id, _, head = await dropped_from_a(gateways)
        resumed = await gateways.resume("b", stream_id, headers={**bearer(KEY), "Last-Event-ID": f"{stream_id}.1"})
        assert resumed.status == 200
        replayed = [await next_event(resumed) for _ in head[1:]]  # B has what A stored, before A dies
        assert replayed == head[1:]
        gateways.processes["a"].send_signal(signal.SIGKILL)  # no shutdown, no last write: the owner is gone
        ending = await read_after_commit(resumed)
    assert ending[-1] == b"data: [DONE]\n\n"
    error = orjson.loads(data(ending)[-2].removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_owner_lost"
    assert not EVENT_ID.match(ending[-2])  # the error is not one of the stream's events: a resume may see more
    assert numbers(replayed + ending[:-2], stream_id) == list(range(2, len(head) + 1))  # nothing lost, nothing twice


async def test_delete_on_b_stops_the_upstream_that_a_reads(upstream, redis_url, tmp_path):
    gate = asyncio.Event()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path) as gateways:
        first = await gateways.start("a")
        stream_id = first.headers["X-Stream-Id"]
        await read_before(first)
        stranger = await gateways.session.delete(f"{gateways.urls['b']}/v2/streams/{stream_id}", headers=bearer(OTHER))
        assert stranger.status == 404  # another key learns nothing, and stops nothing
        stopped = await gateways.session.delete(f"{gateways.urls['b']}/v2/streams/{stream_id}", headers=bearer(KEY))
        assert stopped.status == 204
        async with asyncio.timeout(BOUND):
            await upstream.cut_off_event.wait()  # A closed its upstream
        ending = await rest(first)  # the client still on A is told, then [DONE]
    assert data(ending)[-1] == b"data: [DONE]\n\n"
    assert orjson.loads(data(ending)[-2].removeprefix(b"data: "))["error"]["code"] == "stream_cancelled"


async def test_a_stream_nobody_resumed_is_410_on_b_not_404(upstream, redis_url, tmp_path):
    gate = asyncio.Event()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path, grace=0.5) as gateways:
        stream_id, _, _ = await dropped_from_a(gateways)
        async with asyncio.timeout(BOUND):
            await upstream.cut_off_event.wait()  # the grace passed with no reader: A cancelled the upstream
        late = await gateways.resume("b", stream_id)
        assert late.status == 410
        assert (await late.json())["error"]["code"] == "stream_expired"
        unknown = await gateways.resume("b", "x" * 22)
        assert unknown.status == 404


async def test_with_redis_down_a_resume_is_503_and_a_new_resumable_request_too(upstream, redis_server, tmp_path):
    gate = asyncio.Event()
    gate.set()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_server.url, tmp_path) as gateways:
        first = await gateways.start("a")
        stream_id = first.headers["X-Stream-Id"]
        await rest(first)
        redis_server.stop()
        resumed = await gateways.resume("b", stream_id)
        assert resumed.status == 503
        assert (await resumed.json())["error"]["code"] == "resume_unavailable"
        refused = await gateways.session.post(f"{gateways.urls['a']}/v1/chat/completions", json=RESUMABLE,
                                              headers=bearer(KEY))
        assert refused.status == 503
        assert (await refused.json())["error"]["code"] == "resume_unavailable"


async def test_a_stream_that_is_not_resumable_leaves_nothing_in_redis(upstream, redis_url, redis, tmp_path):
    gate = asyncio.Event()
    gate.set()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path) as gateways:
        await redis.config_resetstat()
        plain = await gateways.start("a", body=CHAT)
        assert "X-Stream-Id" not in plain.headers
        events = await rest(plain)
        stats = await redis.info("commandstats")
    assert not any(EVENT_ID.match(event) for event in events)
    assert text_of(events) == "".join(BEFORE + AFTER)
    assert await redis.dbsize() == 0
    assert not [name for name in stats if name.removeprefix("cmdstat_") in ("xadd", "hset", "evalsha", "eval")]


async def test_a_reader_on_b_keeps_the_upstream_on_a_read_past_the_grace(upstream, redis_url, tmp_path):
    gate = asyncio.Event()
    upstream.queue(gated(gate))
    async with two_instances(upstream, redis_url, tmp_path, grace=0.5) as gateways:
        stream_id, _, head = await dropped_from_a(gateways)
        resumed = await gateways.resume("b", stream_id, headers={**bearer(KEY), "Last-Event-ID": f"{stream_id}.{len(head)}"})
        assert resumed.status == 200
        await asyncio.sleep(2.0)  # four graces: A sees B's reader in Redis and does not give up on the upstream
        assert upstream.cut_off == 0
        gate.set()
        tail = await read_after_commit(resumed)
    assert numbers(head + tail, stream_id) == list(range(1, len(head + tail) + 1))
    assert text_of(data(head + tail)) == TEXT
