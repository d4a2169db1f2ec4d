"""What a limit backend does, and how its answers look to clients: 429s and the x-ratelimit-* headers.

Requests and tokens are token buckets holding a minute's budget and refilled continuously (a key with
`requests_per_minute: 60` may burst 60 requests, then gets one more a second). The token bucket is
charged the request's estimate on admission and corrected by the real usage when the stream ends; it
may go below zero when the answer used more than estimated, and then the next request waits. A request
is admitted when its estimate fits in what is left; an estimate larger than the whole budget only needs
a full bucket, so that a large request waits instead of failing forever.
Concurrent streams count every completion in flight (a non-stream answer is streamed from the provider too).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..config import ClientKey
from ..errors import GatewayError
from ..metrics import Metrics

log = logging.getLogger("gateway.limits")

WINDOW = 60.0  # seconds: every budget is per minute
STREAMS_RETRY_AFTER = 1  # seconds: when a stream slot frees up cannot be known
BUSY_RETRY_AFTER = 1  # seconds: a busy limit backend frees a connection within milliseconds


@dataclass(frozen=True)
class Budget:
    limit: int
    level: float  # what is left; below zero when real usage overran the estimates

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.level))

    @property
    def reset(self) -> float:
        """Seconds until the budget is whole again."""
        return max(0.0, (self.limit - self.level) * WINDOW / self.limit)

    def wait(self, amount: int) -> float:
        """Seconds until `amount` (at most the whole budget) fits."""
        return max(0.0, (min(amount, self.limit) - self.level) * WINDOW / self.limit)


@dataclass
class Admission:
    """A request let through: what it was charged, the stream slot it holds, the headers for its answer."""
    key: ClientKey
    tokens: int  # the estimate charged to the token budget
    slot: object | None = None  # the concurrent-stream slot held, when the key has that limit
    headers: dict[str, str] = field(default_factory=dict)
    counted: bool = True  # False: let through uncounted while the backend failed (on_backend_error: open)
    settled: bool = False


class LimitBackend(ABC):
    name: str

    def __init__(self, metrics: Metrics, on_backend_error: str = "open") -> None:
        self.metrics = metrics
        self.on_backend_error = on_backend_error

    async def start(self) -> None:
        """Called once when the application starts."""

    async def close(self) -> None:
        """Called once when the application stops, after the last request ended."""

    @abstractmethod
    async def admit(self, key: ClientKey, tokens: int) -> Admission:
        """Charges one request and `tokens` (the estimate) and takes a stream slot, all or nothing.
        Raises a 429 GatewayError naming the limit when one is exhausted."""

    @abstractmethod
    async def settle(self, admission: Admission, used_tokens: int | None) -> None:
        """Corrects the token budget by the real usage (None: keep the estimate) and gives the slot
        back. Must be safe to call on every ending of a stream, at most once per admission."""

    def refuse(self, key: ClientKey, limit: str, requests: Budget | None, tokens: Budget | None,
               asked: int) -> GatewayError:
        """The 429 for `limit`. Retry-After covers every exhausted budget, not only the one named."""
        self.metrics.rate_limited.labels(key.id, limit).inc()
        retry_after = max(requests.wait(1) if requests else 0.0, tokens.wait(asked) if tokens else 0.0,
                          STREAMS_RETRY_AFTER if limit == "concurrent_streams" else 0.0)
        wait = max(1, math.ceil(retry_after))
        if limit == "requests_per_minute":
            assert requests is not None  # the budget that refused
            detail = f"limit {requests.limit}. Try again in {_duration(retry_after)}."
        elif limit == "tokens_per_minute":
            assert tokens is not None  # the budget that refused
            detail = (f"limit {tokens.limit}, remaining {tokens.remaining}, requested {asked} (estimated from "
                      f"the prompt and max_tokens). Try again in {_duration(retry_after)}.")
        else:
            detail = f"{key.limits.concurrent_streams} streams already open. Try again when one ends."
        headers = budget_headers(requests, tokens)
        headers["Retry-After"] = str(wait)
        return GatewayError(429, f"Rate limit reached for key '{key.id}' on {limit}: {detail}",
                            type=limit, code="rate_limit_exceeded", headers=headers)


def budget_headers(requests: Budget | None, tokens: Budget | None) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the budgets a key has."""
    headers = {}
    for kind, budget in (("requests", requests), ("tokens", tokens)):
        if budget is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(budget.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(budget.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = _duration(budget.reset)
    return headers


def _duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"
    minutes, rest = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{rest}s"


def backend_unavailable() -> GatewayError:
    """on_backend_error: closed, while the backend fails."""
    return GatewayError(503, "rate limits cannot be checked right now (the limit backend is unreachable): "
                        "retry the request", type="service_unavailable", code="limits_unavailable")


def limits_busy() -> GatewayError:
    """The limit backend answers but every connection to it is taken: back-pressure, never uncounted."""
    return GatewayError(503, "rate limits cannot be checked right now (every connection to the limit backend is "
                        "busy): retry the request", type="service_unavailable", code="limits_busy",
                        headers={"Retry-After": str(BUSY_RETRY_AFTER)})
