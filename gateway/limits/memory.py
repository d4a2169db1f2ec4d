"""Limits counted in this process: the default, right for a single gateway instance."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..config import ClientKey
from .base import WINDOW, Admission, Budget, LimitBackend, budget_headers


class TokenBucket:
    __slots__ = ("limit", "level", "at")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.level = float(limit)
        self.at = now

    def budget(self, now: float) -> Budget:
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / WINDOW)
        self.at = now
        return Budget(self.limit, self.level)


class _KeyState:
    __slots__ = ("requests", "tokens", "streams")

    def __init__(self, key: ClientKey, now: float) -> None:
        limits = key.limits
        self.requests = TokenBucket(limits.requests_per_minute, now) if limits.requests_per_minute else None
        self.tokens = TokenBucket(limits.tokens_per_minute, now) if limits.tokens_per_minute else None
        self.streams = 0


class MemoryLimits(LimitBackend):
    name = "memory"

    def __init__(self, *args: Any, clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.states: dict[str, _KeyState] = {}

    def _state(self, key: ClientKey, now: float) -> _KeyState:
        """The key's buckets; a new one starts full at `now`, the same clock reading the caller uses next
        (a later reading would make `now` look earlier than the bucket and drain it)."""
        state = self.states.get(key.id)
        if state is None:
            state = self.states[key.id] = _KeyState(key, now)
        return state

    def open_streams(self, key_id: str) -> int:
        state = self.states.get(key_id)
        return state.streams if state else 0

    async def admit(self, key: ClientKey, tokens: int) -> Admission:
        # No await between the checks and the charges: admission is atomic within the event loop.
        now = self.clock()
        state = self._state(key, now)
        requests = state.requests.budget(now) if state.requests else None
        token_budget = state.tokens.budget(now) if state.tokens else None
        streams = key.limits.concurrent_streams
        refused = None
        if requests is not None and requests.wait(1) > 0:
            refused = "requests_per_minute"
        elif token_budget is not None and token_budget.wait(tokens) > 0:
            refused = "tokens_per_minute"
        elif streams is not None and state.streams >= streams:
            refused = "concurrent_streams"
        if refused is not None:
            raise self.refuse(key, refused, requests, token_budget, tokens)
        if state.requests is not None:
            assert requests is not None  # both come from the key's requests_per_minute
            state.requests.level -= 1
            requests = Budget(requests.limit, state.requests.level)
        if state.tokens is not None:
            assert token_budget is not None  # both come from the key's tokens_per_minute
            state.tokens.level -= tokens
            token_budget = Budget(token_budget.limit, state.tokens.level)
        slot = None
        if streams is not None:
            state.streams += 1
            slot = state
        return Admission(key, tokens, slot, budget_headers(requests, token_budget))

    async def settle(self, admission: Admission, used_tokens: int | None) -> None:
        if admission.settled:
            return
        admission.settled = True
        now = self.clock()
        state = self._state(admission.key, now)
        if admission.slot is not None:
            state.streams -= 1
        if state.tokens is not None and used_tokens is not None:
            state.tokens.budget(now)
            state.tokens.level = min(state.tokens.limit, state.tokens.level + admission.tokens - used_tokens)
