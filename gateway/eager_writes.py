"""The upstream request's body written in the loop turn that sends it, on Python 3.11 as on 3.12+.

aiohttp writes a request's body from a task of its own (`ClientRequest.write_bytes`). On Python 3.12
and newer it starts that task eagerly: the body usually leaves at once and the task is done before it
is ever scheduled. On 3.11 the task starts one loop turn later, so every upstream request waits behind
whatever else that turn runs, and costs a task (measured with bench/compare.py's paced load: about 1 ms
of added time to first token). The app's loop gets a task factory that does for this one coroutine what
3.12 does: its first step is run at once, and only a body that must wait (the connection's buffer is
full) goes on in a task. Every other coroutine gets the loop's usual task.

The same start for the server's request handler (aiohttp's other eager task on 3.12+) was tried twice
and is not done: it takes the handler's turn off the request's path, but at 100 paced streams the
turns left grow by as much, the client's first token comes no sooner (8 interleaved runs), it costs
1.3% more instructions a request, and it needs asyncio's private current-task table.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from aiohttp.client_reqrep import ClientRequest

from .coroutines import Resumed

_WRITE_BYTES = ClientRequest.write_bytes.__code__


def install(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Sets the factory on `loop` (Python 3.11, no factory of its own); returns what undoes it."""
    if sys.version_info >= (3, 12) or loop.get_task_factory() is not None:
        return lambda: None
    loop.set_task_factory(eager_body_writes)
    return lambda: loop.set_task_factory(None) if loop.get_task_factory() is eager_body_writes else None


def eager_body_writes(loop: asyncio.AbstractEventLoop,
                      coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
                      context: contextvars.Context | None = None) -> asyncio.Future[Any]:
    if getattr(coro, "cr_code", None) is not _WRITE_BYTES:
        return asyncio.Task(coro, loop=loop, context=context)
    assert isinstance(coro, Coroutine)  # it has write_bytes's code
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
