"""aiohttp's two eager tasks of Python 3.12+, on 3.11: a request's handler and its upstream body writer.

aiohttp starts two tasks a request eagerly on Python 3.12 and newer (their first step runs at once, in the
turn that makes them): the server's handler of each request (`RequestHandler._handle_request`) and the
client's writer of each request body (`ClientRequest.write_bytes`). On 3.11 each starts a loop turn later,
behind whatever else that turn runs. The app's loop gets a task factory that does for these two coroutines
what 3.12 does; every other coroutine gets the loop's usual task. Measured (bench/compare.py, paced load):
the body write's turn cost about 1 ms of added time to first token; the handler's was within the noise.

- The handler gets its task first, and its first step runs at once as that task (`asyncio.current_task()`
  is the task, as in 3.12's eager start); the task goes on from where the step waited (`Resumed`).
- The body writer's first step runs at once too; only a body that must wait (the connection's buffer is
  full) goes on in a task, and a body written at once costs no task at all.
"""

from __future__ import annotations

import asyncio
import asyncio.tasks
import contextvars
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from aiohttp.client_reqrep import ClientRequest
from aiohttp.web_protocol import RequestHandler

from .coroutines import Resumed

_HANDLE_REQUEST = RequestHandler._handle_request.__code__
_WRITE_BYTES = ClientRequest.write_bytes.__code__
# What asyncio.current_task() reads (its own module's dict): the eager step runs as its task
_CURRENT_TASKS: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = asyncio.tasks.current_task.__globals__[
    "_current_tasks"]

AnyCoroutine = Generator[Any, None, Any] | Coroutine[Any, Any, Any]


def install(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Sets the factory on `loop` (Python 3.11, no factory of its own); returns what undoes it."""
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        return lambda: None
    loop.set_task_factory(eager_tasks)
    return lambda: loop.set_task_factory(None) if loop.get_task_factory() is eager_tasks else None


def eager_tasks(loop: asyncio.AbstractEventLoop, coro: AnyCoroutine,
                context: contextvars.Context | None = None) -> asyncio.Future[Any]:
    code = getattr(coro, "cr_code", None)
    if code is _HANDLE_REQUEST:
        assert isinstance(coro, Coroutine)
        return _started_task(loop, coro, context)
    if code is _WRITE_BYTES:
        assert isinstance(coro, Coroutine)
        return _written(loop, coro, context)
    return asyncio.Task(coro, loop=loop, context=context)


def _started_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                  context: contextvars.Context | None) -> asyncio.Task[Any]:
    """A task for `coro` whose first step has run, as that task, before this returns."""
    context = context if context is not None else contextvars.copy_context()  # as a task's own would be
    resumed = Resumed(coro)
    task: asyncio.Task[Any] = asyncio.Task(resumed, loop=loop, context=context)  # it goes on next turn
    outer = _CURRENT_TASKS.get(loop)  # the task that made this one (aiohttp's connection task)
    _CURRENT_TASKS[loop] = task
    try:
        resumed.waits_on(context.run(coro.send, None))
    except (KeyboardInterrupt, SystemExit) as exc:  # as 3.12's eager start: the task's ending, and raised
        resumed.ended_with(exc)
        raise
    except BaseException as exc:  # it ended at once, with its result or its error: the task's, next turn
        resumed.ended_with(exc)
    finally:
        if outer is None:
            del _CURRENT_TASKS[loop]
        else:
            _CURRENT_TASKS[loop] = outer
    return task


def _written(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
             context: contextvars.Context | None) -> asyncio.Future[Any]:
    """The body writer's first step at once; a task only for a body that must wait."""
    context = context if context is not None else contextvars.copy_context()  # as a task's own would be
    try:
        waiting = context.run(coro.send, None)
    except StopIteration:  # written: aiohttp sees a done task and keeps none (as with 3.12's eager start)
        written: asyncio.Future[Any] = loop.create_future()
        written.set_result(None)
        return written
    except BaseException as exc:  # write_bytes reports its failures to the connection: not seen in practice
        failed: asyncio.Future[Any] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return asyncio.Task(Resumed(coro, waiting), loop=loop, context=context)
