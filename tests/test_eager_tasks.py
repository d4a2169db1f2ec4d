"""gateway/eager_tasks.py: aiohttp's request handlers and request-body writers started at once on Python 3.11, over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import sys

import aiohttp
import pytest
from aiohttp import web

from gateway import eager_tasks

from tests.helpers import waits_until_cancelled

PAUSE = web.AppKey("pause", list)  # [seconds]: changed by a test while the app runs
pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="aiohttp starts both eagerly itself")


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
        future = eager_tasks.eager_tasks(loop, coro, context)
        if getattr(coro, "cr_code", None) is eager_tasks._WRITE_BYTES:
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
    task = eager_tasks.eager_tasks(loop, other())
    assert isinstance(task, asyncio.Task) and not task.done()
    assert await task == 7


async def test_install_leaves_a_loop_with_a_factory_of_its_own_alone():
    loop = asyncio.get_running_loop()

    def own(loop, coro, context=None):
        return asyncio.Task(coro, loop=loop, context=context)

    loop.set_task_factory(own)
    try:
        undo = eager_tasks.install(loop)
        assert loop.get_task_factory() is own
        undo()
        assert loop.get_task_factory() is own
    finally:
        loop.set_task_factory(None)
    undo = eager_tasks.install(loop)
    assert loop.get_task_factory() is eager_tasks.eager_tasks
    undo()
    assert loop.get_task_factory() is None


async def test_a_started_task_runs_its_first_step_at_once_as_itself():
    loop = asyncio.get_running_loop()
    seen = []

    async def handler() -> str:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)
        seen.append(asyncio.current_task())
        return "answered"

    outer = asyncio.current_task()
    task = eager_tasks._started_task(loop, handler(), None)
    assert seen == [task]  # before this task let the loop run
    assert asyncio.current_task() is outer
    assert await task == "answered"
    assert seen == [task, task]


async def test_a_started_task_that_ends_at_once_is_done_after_its_own_step():
    loop = asyncio.get_running_loop()

    async def answers() -> int:
        return 7

    async def fails() -> None:
        raise LookupError("at once")

    assert await eager_tasks._started_task(loop, answers(), None) == 7
    with pytest.raises(LookupError, match="at once"):
        await eager_tasks._started_task(loop, fails(), None)


async def test_a_started_task_cancelled_before_the_loop_ran_it_ends_its_coroutine():
    loop = asyncio.get_running_loop()
    ended: list[str] = []
    task = eager_tasks._started_task(loop, waits_until_cancelled(ended), None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["finally"]


@pytest.fixture
async def handlers_made():
    """For each request handler's task the factory made: (whether the handler had begun when it returned,
    the task), and what asyncio.current_task() was inside each handler."""
    loop = asyncio.get_running_loop()
    made: list[tuple[bool, asyncio.Future]] = []
    inside: list[asyncio.Task | None] = []

    def recording(loop, coro, context=None):
        before = len(inside)
        future = eager_tasks.eager_tasks(loop, coro, context)
        if getattr(coro, "cr_code", None) is eager_tasks._HANDLE_REQUEST:
            made.append((len(inside) > before, future))
        return future

    loop.set_task_factory(recording)
    yield made, inside
    loop.set_task_factory(None)


async def test_a_served_request_is_handled_in_the_turn_its_task_is_made(aiohttp_server, handlers_made):
    made, inside = handlers_made

    async def handler(request: web.Request) -> web.Response:
        inside.append(asyncio.current_task())
        await asyncio.sleep(0)  # waits once: the task goes on from here
        return web.Response(text=(await request.text()).upper())

    app = web.Application()
    app.router.add_post("/", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        for body in ("one", "two"):  # the second on the kept-alive connection
            async with session.post(server.make_url("/"), data=body) as response:
                assert await response.text() == body.upper()
    assert [began for began, _ in made] == [True, True]
    assert inside == [task for _, task in made]  # each handler ran as its own task
    assert all(isinstance(task, asyncio.Task) and task.done() for _, task in made)


async def test_a_client_that_leaves_cancels_a_handler_started_at_once(aiohttp_server, handlers_made):
    made, inside = handlers_made
    entered, ended = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        inside.append(asyncio.current_task())
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.set()
        return web.Response()

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)  # the test server cancels a handler whose client left
    async with aiohttp.ClientSession() as session:
        request = asyncio.ensure_future(session.get(server.make_url("/")))
        await asyncio.wait_for(entered.wait(), 10)
        request.cancel()  # the connection closes
    await asyncio.wait_for(ended.wait(), 10)
    assert made and made[0][0] and made[0][1].cancelled()
