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
    `step` too, so that it ends as it would have: its `finally` blocks run, its ending is the task's. A step
    that ended in its first step (`ended_with`) ends this at its first send, with the same result or error.
    """

    __slots__ = ("_step", "_waiting", "_ending")

    def __init__(self, step: Coroutine[Any, Any, T], waiting: Any = None) -> None:
        self._step = step
        self._waiting = waiting
        self._ending: BaseException | None = None

    def waits_on(self, waiting: Any) -> None:
        """What the first step, taken after this was made, suspended on."""
        self._waiting = waiting

    def ended_with(self, ending: BaseException) -> None:
        """The first step ended the step: with its StopIteration (the result) or its error."""
        self._ending = ending

    def send(self, value: Any) -> Any:
        waiting = self._waiting
        if waiting is _HANDED_ON:
            return self._step.send(value)  # its StopIteration carries the result
        self._waiting = _HANDED_ON
        return waiting if self._ending is None else self._end()

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._waiting is not _HANDED_ON:
            self._waiting = _HANDED_ON
            if self._ending is not None:  # it ended already, before what is thrown now: as it ended
                return self._end()
        return self._step.throw(typ) if val is None and tb is None else self._step.throw(typ, val, tb)

    def close(self) -> None:
        self._waiting, self._ending = _HANDED_ON, None
        self._step.close()

    def _end(self) -> Any:
        ending, self._ending = self._ending, None
        assert ending is not None
        raise ending

    def __await__(self) -> Generator[Any, Any, T]:
        return self  # it has a generator's send, throw, close and __next__

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> Resumed[T]:
        return self
