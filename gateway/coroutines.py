"""Coroutines started by hand: a first step taken at once, the rest awaited only when it must wait."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_HANDED_ON: Any = object()  # the first step's outcome has been handed on: what comes now goes to the step


class Resumed(Coroutine[Any, Any, T], Generic[T]):
    """What `await step` does, from where `step` (already started by hand) suspended on `waiting`.

    Its first send hands on `waiting`; what the loop sends or throws afterwards goes to `step`, until it
    ends with its result. A throw before that first send (a task cancelled before its first step) goes to
    `step` too, so that it ends as it would have: its `finally` blocks run, its ending is the task's (a
    generator wrapper would end before it began and leave `step` suspended until garbage collection).
    """

    __slots__ = ("_step", "_waiting")

    def __init__(self, step: Coroutine[Any, Any, T], waiting: Any) -> None:
        self._step = step
        self._waiting = waiting

    def send(self, value: Any) -> Any:
        waiting = self._waiting
        if waiting is _HANDED_ON:
            return self._step.send(value)  # its StopIteration carries the result
        self._waiting = _HANDED_ON
        return waiting

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._waiting = _HANDED_ON
        return self._step.throw(typ) if val is None and tb is None else self._step.throw(typ, val, tb)

    def close(self) -> None:
        self._waiting = _HANDED_ON
        self._step.close()

    def __await__(self) -> Generator[Any, Any, T]:
        return self  # it has a generator's send, throw, close and __next__

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> Resumed[T]:
        return self
