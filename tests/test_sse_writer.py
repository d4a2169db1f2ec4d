"""gateway/sse.py's EventStream, over real sockets: when its events leave, and in how many writes."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from gateway.sse import DONE_EVENT, EventStream, encode_event

EVENTS = [encode_event(b'{"n":1}'), encode_event(b'{"n":2}')]


async def served(aiohttp_client, steps):
    """A server whose one handler runs `steps(response)` on a prepared EventStream; what each step saw
    is kept in `seen`; the client's whole body comes back with it."""
    seen: list[object] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        response = EventStream(keepalive=60.0)
        writes: list[bytes] = []
        transport = request.transport
        assert transport is not None
        write, writelines = transport.write, transport.writelines
        transport.write = lambda data: (writes.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
        transport.writelines = lambda parts: (  # type: ignore[method-assign]
            writes.append(b"".join(parts)), writelines(parts))[1]
        await response.prepare(request)
        await steps(response, writes, seen)
        await response.write_eof()
        response.stop_streaming()
        seen.append(list(writes))
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    body = await (await client.get("/")).read()
    return seen, body


async def test_a_batch_at_once_leaves_in_the_handlers_step_with_the_headers(aiohttp_client):
    async def steps(response, writes, seen):
        await response.write_events(EVENTS, at_once=True)
        seen.append(list(writes))  # before the handler yields to the loop

    seen, body = await served(aiohttp_client, steps)
    [written] = seen[0]  # one write: the headers and both events
    assert written.startswith(b"HTTP/1.1 200") and written.count(b"data: ") == 2
    assert body == b"".join(EVENTS)


async def test_a_queued_batch_waits_for_the_flush_and_leaves_with_what_follows(aiohttp_client):
    async def steps(response, writes, seen):
        await response.write_events(EVENTS)
        seen.append(list(writes))  # nothing yet: the flush is a loop callback
        await response.write_event(DONE_EVENT)

    seen, body = await served(aiohttp_client, steps)
    assert seen[0] == []
    assert b"".join(seen[1]).count(b"data: ") == 3
    assert body == b"".join(EVENTS) + DONE_EVENT


@pytest.mark.parametrize("at_once", [True, False])
async def test_events_of_two_batches_all_arrive_in_order(aiohttp_client, at_once):
    async def steps(response, writes, seen):
        await response.write_events(EVENTS[:1], at_once=at_once)
        await asyncio.sleep(0)
        await response.write_events(EVENTS[1:], at_once=at_once)

    _, body = await served(aiohttp_client, steps)
    assert body == b"".join(EVENTS)
