"""Provider health: consecutive failures put a provider in a cooldown, so that fallbacks answer first.

The breaker is per provider (one provider's outage hits all its models). Failures are counted per
gateway instance; with `limits.backend: redis` the cooldowns themselves are shared (gateway/shared_health.py):
a cooldown one instance enters is published, and every instance skips that provider within a poll interval.
After the cooldown the provider is tried again; one more failure puts it straight back, one success
clears its record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .config import ProviderConfig

log = logging.getLogger("gateway.health")


@dataclass
class ProviderState:
    consecutive_failures: int = 0
    cooling_until: float = 0.0  # monotonic time
    last_error: str | None = None
    failures: int = 0
    successes: int = 0
    shared_until: float = 0.0  # the part of the cooldown learnt from another instance (monotonic time)


class CooldownPublisher(Protocol):
    """Told of each cooldown entered and ended here; must not block (it publishes in the background)."""

    def entered(self, provider: str, seconds: float, code: str) -> None: ...

    def ended(self, provider: str) -> None: ...


class Health:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, ProviderState] = {}
        self.publisher: CooldownPublisher | None = None

    def shared_cooldown(self, name: str, seconds_left: float | None) -> None:
        """What the shared store says of a provider: cooling for `seconds_left` more, or (None) not cooling.
        A shared cooldown that ended elsewhere (a probe there succeeded) ends here too; a local one stays."""
        state = self._state(name)
        now = self._clock()
        if seconds_left is not None and seconds_left > 0:
            until = now + seconds_left
            if until > state.cooling_until:
                state.cooling_until = state.shared_until = until
        elif state.shared_until > now and state.cooling_until == state.shared_until:
            state.cooling_until = state.shared_until = 0.0

    def _state(self, name: str) -> ProviderState:
        state = self._states.get(name)
        if state is None:
            state = self._states[name] = ProviderState()
        return state

    def cooling_for(self, provider: ProviderConfig) -> float:
        """Seconds left in the provider's cooldown; 0 when it may be tried."""
        state = self._states.get(provider.name)
        return max(0.0, state.cooling_until - self._clock()) if state else 0.0

    def succeeded(self, provider: ProviderConfig) -> None:
        state = self._state(provider.name)
        state.successes += 1
        if state.consecutive_failures >= provider.health.max_failures > 0:
            log.info("provider %s answered again after %d consecutive failure(s)", provider.name,
                     state.consecutive_failures)
        if self.publisher is not None and state.cooling_until:  # a cooldown since the last success: it is over
            self.publisher.ended(provider.name)
        state.consecutive_failures = 0
        state.cooling_until = state.shared_until = 0.0

    def failed(self, provider: ProviderConfig, code: str, cool_for: float = 0.0) -> None:
        """Records a failure; `cool_for` (a long retry-after) starts a cooldown on its own."""
        state = self._state(provider.name)
        state.failures += 1
        state.consecutive_failures += 1
        state.last_error = code
        policy = provider.health
        if policy.max_failures and state.consecutive_failures >= policy.max_failures:
            cool_for = max(cool_for, policy.cooldown)
        if cool_for > 0:
            state.cooling_until = max(state.cooling_until, self._clock() + cool_for)
            if self.publisher is not None:
                self.publisher.entered(provider.name, cool_for, code)
            log.warning("provider %s skipped for %.0f s after %d consecutive failure(s), last %s",
                        provider.name, cool_for, state.consecutive_failures, code)

    def report(self, provider: ProviderConfig) -> dict[str, Any]:
        state = self._states.get(provider.name) or ProviderState()
        cooling = self.cooling_for(provider)
        return {
            "state": "cooling_down" if cooling else ("failing" if state.consecutive_failures else "ok"),
            "cooldown_seconds_left": round(cooling, 1),
            "consecutive_failures": state.consecutive_failures,
            "last_error": state.last_error,
            "failures": state.failures,
            "successes": state.successes,
        }
