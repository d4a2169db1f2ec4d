"""gateway/eager_writes.py: aiohttp's request-body writers started at once on Python 3.11, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import sys

import aiohttp
import pytest
from aiohttp import web

from gateway import eager_writes

PAUSE = web.AppKey("pause", list)  # [seconds]: changed by a test while the app runs
pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="aiohttp starts body writes eagerly itself")


@pytest.fixture
async def digest_server(aiohttp_server):
    """Answers each POST with the SHA-256 of the body it got, after `pause` seconds without reading."""
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(request.app[PAUSE][0])
        return web.Response(text=hashlib.sha256(await request.read()).hexdigest())

    app = web.Application(client_max_size=64 << 20)
    app[PAUSE] = [0.0]
    app.router.add_post("/", handler)
    return await aiohttp_server(app)


@pytest.fixture
async def made():
    """What the factory made for each body writer: (done at once, the future)."""
    loop = asyncio.get_running_loop()
    seen: list[asyncio.Future] = []

    def recording(loop, coro, context=None):
        future = eager_writes.eager_body_writes(loop, coro, context)
        if getattr(coro, "cr_code", None) is eager_writes._WRITE_BYTES:
            seen.append(future)
        return future

    loop.set_task_factory(recording)
    yield seen
    loop.set_task_factory(None)


async def test_a_small_body_is_written_at_once_without_a_task(digest_server, made):
    body = b'{"model": "m", "messages": []}'
    async with aiohttp.ClientSession() as session:
        async with session.post(digest_server.make_url("/"), data=body) as response:
            assert await response.text() == hashlib.sha256(body).hexdigest()
    assert len(made) == 1
    assert not isinstance(made[0], asyncio.Task) and made[0].done()


async def test_a_body_that_must_wait_goes_on_in_a_task_and_arrives_whole(digest_server, made):
    digest_server.app[PAUSE][0] = 0.2  # the server does not read: the client's buffer fills, the write waits
    body = bytes(range(256)) * (32 << 12)  # 32 MiB
    async with aiohttp.ClientSession() as session:
        async with session.post(digest_server.make_url("/"), data=body) as response:
            assert await response.text() == hashlib.sha256(body).hexdigest()
    assert len(made) == 1
    assert isinstance(made[0], asyncio.Task) and made[0].done() and made[0].exception() is None


async def test_other_coroutines_get_the_loops_usual_task():
    async def other() -> int:
        return 7

    loop = asyncio.get_running_loop()
    task = eager_writes.eager_body_writes(loop, other())
    assert isinstance(task, asyncio.Task) and not task.done()
    assert await task == 7


async def test_install_leaves_a_loop_with_a_factory_of_its_own_alone():
    loop = asyncio.get_running_loop()

    def own(loop, coro, context=None):
        return asyncio.Task(coro, loop=loop, context=context)

    loop.set_task_factory(own)
    try:
        undo = eager_writes.install(loop)
        assert loop.get_task_factory() is own
        undo()
        assert loop.get_task_factory() is own
    finally:
        loop.set_task_factory(None)
    undo = eager_writes.install(loop)
    assert loop.get_task_factory() is eager_writes.eager_body_writes
    undo()
    assert loop.get_task_factory() is None
