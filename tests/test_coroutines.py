"""gateway/coroutines.Resumed: a coroutine started by hand, awaited or made a task from where it waited."""

from __future__ import annotations

import asyncio

import pytest

from gateway.coroutines import Resumed

from tests.helpers import waits_until_cancelled


def started(coro):
    """`coro` after its first step, and what that step waited on."""
    return coro, coro.send(None)


async def test_awaited_it_goes_on_to_the_end_with_the_result():
    loop = asyncio.get_running_loop()
    seen = []

    async def write() -> str:
        for value in (1, 2):
            future = loop.create_future()
            loop.call_soon(future.set_result, value)
            seen.append(await future)
        return "done"

    assert await Resumed(*started(write())) == "done"
    assert seen == [1, 2]


async def test_awaited_it_passes_a_cancellation_on():
    cancelled = []

    async def write() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def step_then_resume() -> None:
        await Resumed(*started(write()))

    task = asyncio.ensure_future(step_then_resume())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [True]


async def test_as_a_task_cancelled_before_its_first_step_the_step_gets_the_cancellation():
    ended: list[str] = []
    task = asyncio.get_running_loop().create_task(Resumed(*started(waits_until_cancelled(ended))))
    task.cancel()  # before the loop ran its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == ["finally"]  # a plain coroutine thrown into before it starts would never run this


async def test_closed_unawaited_it_closes_the_step():
    ended: list[str] = []
    Resumed(*started(waits_until_cancelled(ended))).close()
    assert ended == ["finally"]
