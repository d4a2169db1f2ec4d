"""Coroutines started by hand: a first step taken at once, the rest awaited only when it must wait."""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any


@types.coroutine
def resumed(step: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """What `await step` does, from where `step` (already started by hand) suspended on `waiting`: what
    the loop sends or throws goes to it, until it ends."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:  # a cancellation, most likely: `step` handles it or ends with it
            try:
                waiting = step.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = step.send(sent)
            except StopIteration:
                return
