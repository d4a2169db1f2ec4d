"""gateway/eager_start.py: aiohttp's request handlers and request-body writers started at once on Python 3.11,
over real sockets, and the handler's task semantics kept: current task, context, cancellation, outcome."""

from __future__ import annotations

import asyncio
import hashlib
import sys

import aiohttp
import pytest
from aiohttp import web

from gateway import eager_start

PAUSE = web.AppKey("pause", list)  # [seconds]: changed by a test while the app runs
pytestmark = pytest.mark.skipif(sys.version_info >= (3, 12), reason="aiohttp starts these tasks eagerly itself")


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
        future = eager_start.eager_tasks(loop, coro, context)
        if getattr(coro, "cr_code", None) is eager_start._WRITE_BYTES:
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
    task = eager_start.eager_tasks(loop, other())
    assert isinstance(task, asyncio.Task) and not task.done()
    assert await task == 7


async def test_install_leaves_a_loop_with_a_factory_of_its_own_alone():
    loop = asyncio.get_running_loop()

    def own(loop, coro, context=None):
        return asyncio.Task(coro, loop=loop, context=context)

    loop.set_task_factory(own)
    try:
        undo = eager_start.install(loop)
        assert loop.get_task_factory() is own
        undo()
        assert loop.get_task_factory() is own
    finally:
        loop.set_task_factory(None)
    undo = eager_start.install(loop)
    assert loop.get_task_factory() is eager_start.eager_tasks
    undo()
    assert loop.get_task_factory() is None


# ---------------------------------------------------------------------------------------------- the handler


async def test_a_request_handler_runs_its_first_step_before_the_factory_returns(aiohttp_client):
    """The handler's first line runs inside the factory, as its own task, which stays its task after an await."""
    tasks: list[asyncio.Task] = []
    started_at_return: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        tasks.append(asyncio.current_task())
        await asyncio.sleep(0)
        tasks.append(asyncio.current_task())
        return web.Response(text="ok")

    def recording(loop, coro, context=None):
        future = eager_start.eager_tasks(loop, coro, context)
        if getattr(coro, "cr_code", None) is eager_start._HANDLE_REQUEST:
            started_at_return.append(len(tasks))
            assert future is tasks[-1]
        return future

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    asyncio.get_running_loop().set_task_factory(recording)
    try:
        for _ in range(2):  # a new connection, then a kept-alive one
            assert await (await client.get("/")).text() == "ok"
    finally:
        asyncio.get_running_loop().set_task_factory(None)
    assert started_at_return == [1, 3]
    assert tasks[0] is tasks[1] and tasks[2] is tasks[3] and tasks[0] is not tasks[2]


async def test_a_handler_answered_in_its_first_step_is_a_done_future(aiohttp_client):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=418, text="at once")

    made: list[asyncio.Future] = []

    def recording(loop, coro, context=None):
        future = eager_start.eager_tasks(loop, coro, context)
        if getattr(coro, "cr_code", None) is eager_start._HANDLE_REQUEST:
            made.append(future)
            assert future.done()
        return future

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    asyncio.get_running_loop().set_task_factory(recording)
    try:
        response = await client.get("/")
        assert (response.status, await response.text()) == (418, "at once")
    finally:
        asyncio.get_running_loop().set_task_factory(None)
    assert len(made) == 1


async def run_in_a_task(body):
    """`body()` in a task of its own, as aiohttp's connection task calls the factory."""
    return await asyncio.get_running_loop().create_task(body())


async def test_a_cancellation_before_the_tasks_first_turn_reaches_the_handlers_await():
    loop = asyncio.get_running_loop()
    gate = loop.create_future()
    seen: list[str] = []

    async def handler():
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled at its await")
            raise
        finally:
            seen.append("finally")

    async def body():
        task = eager_start.eager_handler(loop, handler())
        assert isinstance(task, asyncio.Task) and not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    task = await run_in_a_task(body)
    assert task.cancelled() and seen == ["cancelled at its await", "finally"]


async def test_the_first_step_sees_the_tasks_context_and_the_task_goes_on_in_it():
    import contextvars
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")
    loop = asyncio.get_running_loop()

    async def handler():
        var.set("handler")
        await asyncio.sleep(0)
        return var.get(), asyncio.current_task()

    async def body():
        outer = asyncio.current_task()
        task = eager_start.eager_handler(loop, handler())
        assert asyncio.current_task() is outer and var.get() == "outer"
        value, current = await task
        return value, current is task, current is not outer

    assert await run_in_a_task(body) == ("handler", True, True)


async def test_a_timeout_started_in_the_first_step_cancels_the_handlers_task():
    loop = asyncio.get_running_loop()

    async def handler():
        try:
            async with asyncio.timeout(0.01):
                await loop.create_future()  # never done
        except TimeoutError:
            return "timed out"

    async def body():
        return await eager_start.eager_handler(loop, handler())

    assert await run_in_a_task(body) == "timed out"


async def test_a_failure_in_the_first_step_is_the_tasks_exception():
    loop = asyncio.get_running_loop()

    async def handler():
        raise LookupError("at once")

    async def body():
        task = eager_start.eager_handler(loop, handler())
        with pytest.raises(LookupError, match="at once"):
            await task

    await run_in_a_task(body)
