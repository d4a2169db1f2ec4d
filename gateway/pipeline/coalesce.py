"""Delta batching for UIs: the deltas of one choice that arrive within `coalesce_ms` go out as one chunk.

A request asks with `stream_options.coalesce_ms: N` (1..1000; 0 turns a key's default off), a key may
carry a default (`coalesce_ms` in `keys:`). The stage is not listed in `middlewares`: the chain adds it
last, after every listed stage (moderation sees the original deltas), and only to the streams that ask
(`SPEC.active`), so a stream that does not ask runs exactly as before.

- Held: chunks whose choices carry only text (`content`, `reasoning_content`, `reasoning`, `refusal`),
  tool-call fragments with an index, and the first delta's `role`: no finish reason, no logprobs,
  no usage, nothing else. Text is concatenated per choice and field, tool-call fragments per tool index
  (`id`, `type`, `function.name` from the index's first fragment, arguments concatenated).
- The window opens at the first held delta; when it elapses the batch goes out, upstream silent or not
  (one timer per batch, and one helper task per stream that reads the stage before it).
- A batch closes early rather than change what a client reads: before a chunk whose envelope or extras
  differ, and before a field comes back after another (reasoning, then text, then reasoning again
  gives three deltas, as a UI that renders fields in arrival order needs).
- Anything else (a finish reason, usage, logprobs, Anthropic's signature) is never held: the batch goes
  out right before it, or inside it when it is a single choice's chunk that can take the batch's text
  ahead of its own. An error from upstream goes out after the batch.
- Every held chunk is in exactly one chunk out, so a stream never has more events than it had.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

from ..chunks import Batch, Chunk
from ..context import RequestContext
from .coalesce_merge import Held, Raw, holdable
from .spec import MiddlewareSpec


def window_ms(ctx: RequestContext) -> int:
    """The request's stream_options.coalesce_ms (validated: an int 0..1000), else its key's default."""
    if not ctx.stream:
        return 0
    options = ctx.body.get("stream_options")
    if isinstance(options, dict):
        asked = options.get("coalesce_ms")
        if asked is not None:
            return int(asked)
    key = ctx.client
    return key.coalesce_ms or 0 if key is not None else 0


def is_active(ctx: RequestContext) -> bool:
    return window_ms(ctx) > 0


class _Coalescer:
    """The helper task reads the stage before this one and merges; the window's timer and a barrier put
    chunks in `ready`; the stage's own generator hands them on. The helper waits while `ready` is not
    empty, so that a slow client slows the upstream as before, with at most one window held."""

    __slots__ = ("loop", "window", "held", "timer", "ready", "ended", "error", "_consumer", "_pump")

    def __init__(self, window: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.window = window
        self.held: Held | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ready: deque[Raw] = deque()
        self.ended = False
        self.error: Exception | None = None
        self._consumer: asyncio.Future[None] | None = None  # the stage waiting for `ready`
        self._pump: asyncio.Future[None] | None = None  # the helper waiting for `ready` to empty

    async def pump(self, batches: AsyncIterator[Batch]) -> None:
        ready = self.ready
        add = self.add
        try:
            async for batch in batches:
                for chunk in batch:
                    add(chunk)
                del batch, chunk  # what the window keeps, it holds itself
                if ready:
                    self._wake_consumer()
                    while ready:
                        self._pump = self.loop.create_future()
                        await self._pump
        except Exception as exc:  # the upstream's error (or a bug) reaches the client after the batch
            self.error = exc
        self.close_window()
        self.ended = True
        self._wake_consumer()

    def add(self, provider_chunk: Chunk) -> None:
        chunk = cast(Raw, provider_chunk)
        held = self.held
        if held is not None and held.extend(chunk):
            return
        if holdable(chunk):
            if held is not None and held.fits(chunk):
                held.add(chunk)
                return
            self.close_window()
            held = self.held = Held(chunk)
            held.add(chunk)
            self.timer = self.loop.call_at(self.loop.time() + self.window, self._window_elapsed)
            return
        if held is None:
            self.ready.append(chunk)
            return
        self._cancel_timer()
        self.held = None
        self.ready.extend(held.merged_into(chunk))

    def close_window(self) -> None:
        held = self.held
        if held is not None:
            self._cancel_timer()
            self.held = None
            merged = held.chunk()
            if merged is not None:
                self.ready.append(merged)

    def _window_elapsed(self) -> None:
        self.timer = None
        self.close_window()
        self._wake_consumer()

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _wake_consumer(self) -> None:
        waiter = self._consumer
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def drained(self) -> None:
        waiter = self._pump
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_ready(self) -> None:
        if self.ready or self.ended:
            return
        self._consumer = self.loop.create_future()
        try:
            await self._consumer
        finally:
            self._consumer = None

    def stop(self) -> None:
        self._cancel_timer()


async def coalesce(ctx: RequestContext, batches: AsyncIterator[Batch]) -> AsyncGenerator[Batch, None]:
    window = window_ms(ctx)
    if window <= 0:  # Chain leaves the stage out then; this only serves a direct call
        async for batch in batches:
            yield batch
            del batch  # not held while the stream waits for the next
        return
    state = _Coalescer(window / 1000)
    helper = state.loop.create_task(state.pump(batches))
    ready = state.ready
    try:
        while True:
            if ready:
                out = cast(Batch, list(ready))
                ready.clear()
                state.drained()
                yield out
                del out
                continue  # the helper may have made more while this batch was out
            if state.ended:
                if state.error is not None:
                    error, state.error = state.error, None
                    raise error
                return
            await state.wait_ready()
    finally:
        state.stop()
        if not helper.done():
            helper.cancel()
            await asyncio.wait((helper,))


SPEC = MiddlewareSpec("coalesce", coalesce, active=is_active)
