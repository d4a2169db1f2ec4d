"""aiohttp's two eager tasks of Python 3.12+, on 3.11: the server's request handler and the upstream
request's body writer take their first step in the loop turn that makes them.

On 3.12 and newer aiohttp starts both eagerly. On 3.11 each waits one loop turn behind whatever else
that turn runs, and at 100 paced streams a turn is a wait of 0.2-0.3 ms (p50, timestamps inside the
gateway): the handler's turn and the body's both lie between a request's arrival and its upstream
request, so both delay the first token. The app's loop gets a task factory that does for these two
coroutines what 3.12 does; every other coroutine gets the loop's usual task.

- The body writer (`ClientRequest.write_bytes`): its first step is run at once; only a body that must
  wait (the connection's buffer is full) goes on in a task.
- The handler (`RequestHandler._handle_request`): its task is made first and made the current task
  for the first step, as 3.12's eager start does (asyncio's `_enter_task`/`_leave_task`, which 3.11's
  own tasks use around every step), so that `asyncio.current_task()`, timeouts and cancellation see
  the handler's task from its first line. The task's own first step, a turn later, hands on what that
  step waits for; a handler answered in that one step is a done future at once, as on 3.12.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from asyncio.tasks import _enter_task, _leave_task  # 3.11's own, used by its tasks around every step
from collections.abc import Callable, Coroutine, Generator
from typing import Any, cast

from aiohttp.client_reqrep import ClientRequest
from aiohttp.web_protocol import RequestHandler

from .coroutines import Resumed

_WRITE_BYTES = ClientRequest.write_bytes.__code__
_HANDLE_REQUEST = RequestHandler._handle_request.__code__

def install(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Sets the factory on `loop` (Python 3.11, no factory of its own); returns what undoes it."""
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        return lambda: None
    loop.set_task_factory(eager_tasks)
    return lambda: loop.set_task_factory(None) if loop.get_task_factory() is eager_tasks else None


def eager_tasks(loop: asyncio.AbstractEventLoop, coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
                context: contextvars.Context | None = None) -> asyncio.Future[Any]:
    code = getattr(coro, "cr_code", None)  # a native coroutine's (an isinstance check of the ABC costs more)
    if code is _HANDLE_REQUEST:
        return eager_handler(loop, cast(Coroutine[Any, Any, Any], coro), context)
    if code is _WRITE_BYTES:
        return eager_body_write(loop, cast(Coroutine[Any, Any, Any], coro), context)
    return asyncio.Task(coro, loop=loop, context=context)


def eager_body_write(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                     context: contextvars.Context | None = None) -> asyncio.Future[Any]:
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


def eager_handler(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                  context: contextvars.Context | None = None) -> asyncio.Future[Any]:
    """`coro`'s task, its first step already taken as the current task; a done future when that step
    was all of it (an error answered at once), as 3.12 returns a done task."""
    context = context if context is not None else contextvars.copy_context()
    first: list[Any] = [None, None]  # what the first step waits for, or how it ended
    rest = _after_first_step(coro, first)
    next(rest)  # to its first yield: a throw before the task's first turn then lands inside it
    task = asyncio.Task(rest, loop=loop, context=context)
    outer = asyncio.current_task(loop)  # the connection's task (aiohttp's RequestHandler.start)
    if outer is not None:
        _leave_task(loop, outer)
    _enter_task(loop, task)
    try:
        first[0] = context.run(coro.send, None)
    except StopIteration as end:
        first[1] = end
        answered: asyncio.Future[Any] = loop.create_future()
        answered.set_result(end.value)
        return answered  # the task's first turn returns the same value, to no one
    except BaseException as exc:  # _handle_request answers every error itself: not seen in practice
        first[1] = exc
    finally:
        _leave_task(loop, task)
        if outer is not None:
            _enter_task(loop, outer)
    return task


@types.coroutine
def _after_first_step(step: Coroutine[Any, Any, Any], first: list[Any]) -> Generator[Any, Any, Any]:
    """The task's part: hands on the future the first step waits for, then goes on with `step`. What
    is thrown in before that (a cancellation) goes to `step`, at the await it stopped at."""
    thrown: BaseException | None = None
    try:
        yield None  # where eager_handler's next() leaves it
    except BaseException as exc:
        thrown = exc
    waiting, ended = first
    del first
    while ended is None:
        if thrown is not None:
            try:
                waiting = step.throw(thrown)
            except BaseException as end:
                ended = end
                break
            thrown = None
        try:
            yield waiting
            break
        except BaseException as exc:
            thrown = exc
    if isinstance(ended, StopIteration):
        return ended.value
    if ended is not None:
        raise ended
    del waiting  # a stream does not hold what its first step waited for
    return (yield from step)  # a native coroutine, awaited from a types.coroutine generator
