"""Prometheus metrics, one registry per application, served at GET /metrics.

Every request's samples come from its access record (gateway/access_log.py), once, when it ends:
nothing is counted per chunk. Labels are bounded: providers by their configured name, models only
when configured (a provider's `models:` or a route's target; any other is `other`), outcomes only
when shaped like the gateway's codes, keys by their configured id.
"""

from __future__ import annotations

import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from aiohttp import web
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest, multiprocess)

from .config import Config, ProviderConfig
from .health import Health

if TYPE_CHECKING:
    from .access_log import AccessRecord

UNAUTHENTICATED = "-"  # the key label of requests without a known key
OTHER = "other"  # a model label outside the configuration, or an outcome not shaped like a code
_CODE = re.compile(r"^[a-z0-9_]{1,48}$")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_DURATION_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
_TRIES_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10)
_TOKEN_FIELDS = (("prompt", "prompt_tokens"), ("completion", "completion_tokens"), ("reasoning", "reasoning_tokens"))


MetricT = TypeVar("MetricT", Counter, Histogram)
FastT = TypeVar("FastT")
Increment = Callable[[float], None]


def increment(metric: Counter | Gauge) -> Increment:
    """What `metric.inc(amount)` ends in: its value's own inc (a mutex-held float, or under `--workers` a
    shared file's). Counter.inc's and Gauge.inc's checks first (the metric has no labels left to set, an
    amount is not negative, a gauge is not mostrecent) hold for every metric the gateway counts with this."""
    inc: Increment = metric._value.inc  # prometheus_client's own value object
    return inc


class Observe:
    """Histogram.observe of one child, its bucket found by bisection instead of a walk of every bound."""

    __slots__ = ("_sum", "_buckets", "_bounds")

    def __init__(self, child: Histogram) -> None:
        self._sum: Increment = child._sum.inc
        self._buckets: list[Increment] = [bucket.inc for bucket in child._buckets]
        self._bounds: list[float] = list(child._upper_bounds)  # ends with +Inf

    def __call__(self, amount: float) -> None:
        self._sum(amount)
        self._buckets[bisect_left(self._bounds, amount)](1)  # the first bound with amount <= bound


class Pending:
    """What a request adds to one counter child, or one histogram child, summed in plain numbers and given
    to prometheus_client's values (a lock taken per add) only when the metrics are read: `flush`. A dozen
    adds end every request; a scrape comes every few seconds. In one process only: under `--workers` the
    other workers read the values from shared files at any time, and each add goes straight to them."""

    __slots__ = ("_incs", "_bounds", "_counts", "_sum")

    def __init__(self, child: Counter | Histogram) -> None:
        if isinstance(child, Histogram):
            self._incs: list[Increment] = [child._sum.inc, *(bucket.inc for bucket in child._buckets)]
            self._bounds: list[float] = list(child._upper_bounds)  # ends with +Inf
        else:
            self._incs = [increment(child)]
            self._bounds = []
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def add(self, amount: float) -> None:
        """A counter's increment."""
        self._sum += amount

    def observe(self, amount: float) -> None:
        """A histogram's sample."""
        self._sum += amount
        self._counts[bisect_left(self._bounds, amount)] += 1  # the first bound with amount <= bound

    def flush(self) -> None:
        if self._sum:
            self._incs[0](self._sum)
            self._sum = 0.0
        counts = self._counts
        for at, count in enumerate(counts):
            if count:
                self._incs[at + 1](count)
                counts[at] = 0


def counting(pending: list[Pending]) -> Callable[[Counter], Increment]:
    """How a counter child is incremented: through a Pending kept in `pending`, in one process; else at once."""
    return _summed(pending, increment, lambda summed: summed.add)


def observing(pending: list[Pending]) -> Callable[[Histogram], Increment]:
    """How a histogram child is observed: through a Pending kept in `pending`, in one process; else at once."""
    return _summed(pending, Observe, lambda summed: summed.observe)


def _summed(pending: list[Pending], at_once: Callable[[MetricT], Increment],
            bound: Callable[[Pending], Increment]) -> Callable[[MetricT], Increment]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the other workers read the shared files at any time
        return at_once

    def through_pending(child: MetricT) -> Increment:
        summed = Pending(child)
        pending.append(summed)
        return bound(summed)  # Pending's own method: what each add calls
    return through_pending


class Children(Generic[MetricT, FastT]):
    """A labelled metric's children by their label values, each looked up once and kept as `fast(child)`
    (how it is incremented or observed): prometheus_client's `labels()` checks and locks on every call,
    `inc()` and `observe()` check again before the value's own lock, and a request ends with a dozen of
    them. Bounded as the labels are (see above)."""

    __slots__ = ("_metric", "_fast", "_children")

    def __init__(self, metric: MetricT, fast: Callable[[MetricT], FastT]) -> None:
        self._metric: MetricT = metric
        self._fast: Callable[[MetricT], FastT] = fast
        self._children: dict[tuple[str, ...], FastT] = {}

    def __call__(self, *labels: str) -> FastT:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._fast(self._metric.labels(*labels))
        return child


def make_registry() -> CollectorRegistry:
    """The registry the metrics are made in. Under `--workers` (PROMETHEUS_MULTIPROC_DIR set by the
    supervisor, before prometheus_client is imported) their values live in that directory's files."""
    # The *_created series double the output and say nothing an operator asks. (Unannotated upstream.)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    return CollectorRegistry()


def exposed_registry(own: CollectorRegistry) -> CollectorRegistry:
    """What /metrics serves: this process's registry, or under `--workers` the sum of every worker's files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return own
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]  # unannotated upstream
    return registry


class Metrics:
    def __init__(self, config: Config | None = None) -> None:
        r = self.registry = make_registry()
        self.exposed = exposed_registry(r)
        self.requests = Counter("gateway_requests", "Requests by endpoint, provider and model that answered, "
                                "HTTP status and outcome", ("endpoint", "provider", "model", "status", "outcome"),
                                registry=r)
        self.key_requests = Counter("gateway_key_requests", "Requests by client key id and outcome",
                                    ("key", "outcome"), registry=r)
        self.streams_in_flight = Gauge("gateway_streams_in_flight", "Streaming completions open now", registry=r,
                                       multiprocess_mode="livesum")  # of the workers alive
        self.first_chunk = Histogram("gateway_time_to_first_chunk_seconds",
                                     "Seconds from a stream's request to its first chunk sent", ("provider",),
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.stream_duration = Histogram("gateway_stream_duration_seconds", "Seconds a streaming completion took",
                                         ("provider",), buckets=_DURATION_BUCKETS, registry=r)
        self.upstream_first_byte = Histogram("gateway_upstream_time_to_first_byte_seconds",
                                             "Seconds from an upstream call to its response headers", ("provider",),
                                             buckets=_LATENCY_BUCKETS, registry=r)
        self.tries = Histogram("gateway_tries_per_request", "Upstream tries of a completion, retries and "
                               "fallbacks included", buckets=_TRIES_BUCKETS, registry=r)
        self.chunks = Counter("gateway_chunks", "Chunks from providers (in) and to clients (out)",
                              ("provider", "direction"), registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens by provider, model and kind: prompt (in), completion "
                              "and reasoning (out; reasoning is part of completion)", ("provider", "model", "kind"),
                              registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors", "Upstream failures by provider and code",
                                       ("provider", "code"), registry=r)
        self.retries = Counter("gateway_retries", "Tries again at the same target after a failure", registry=r)
        self.fallbacks = Counter("gateway_fallbacks", "Completions answered by a target other than the first, by "
                                 "the provider that answered", ("provider",), registry=r)
        self.cooldowns = Counter("gateway_provider_cooldowns", "Cooldowns a provider entered after failures",
                                 ("provider",), registry=r)
        self.rate_limited = Counter(
            "gateway_rate_limited", "Requests refused by a per-key limit, by key id and limit name",
            ("key", "limit"), registry=r)
        self.limit_backend_errors = Counter(
            "gateway_limit_backend_errors",
            "Failed calls to the limit backend, by operation and the on_backend_error policy applied",
            ("backend", "operation", "on_backend_error"), registry=r)
        self.moderation_actions = Counter("gateway_moderation_actions", "Moderation actions taken, by action",
                                          ("action",), registry=r)
        self.client_disconnects = Counter("gateway_client_disconnects", "Clients that went away before the end "
                                          "of their answer, by endpoint", ("endpoint",), registry=r)
        self.keepalives = Counter("gateway_keepalives", "SSE keep-alive comments sent", registry=r)
        self.known_models: frozenset[tuple[str, str]] = frozenset()
        # the children every request's samples go to, cached with how each is counted (summed until a scrape)
        self._pending: list[Pending] = []
        count, observe = counting(self._pending), observing(self._pending)
        self._requests = Children(self.requests, count)
        self._key_requests = Children(self.key_requests, count)
        self._first_chunk = Children(self.first_chunk, observe)
        self._stream_duration = Children(self.stream_duration, observe)
        self._upstream_first_byte = Children(self.upstream_first_byte, observe)
        self._chunks = Children(self.chunks, count)
        self._tokens = Children(self.tokens, count)
        self._fallbacks = Children(self.fallbacks, count)
        self._tries = observe(self.tries)
        self._retries = count(self.retries)
        self._keepalives = count(self.keepalives)
        self.stream_count = increment(self.streams_in_flight)  # +1 when a stream opens, -1 when it ends
        self._outcomes: dict[str, str] = {}  # outcome -> its label
        if config is not None:
            self.configure(config)

    def flush(self) -> None:
        """Gives prometheus_client what the requests added since the last flush (before every read)."""
        for summed in self._pending:
            summed.flush()

    def configure(self, config: Config) -> None:
        """The (provider, model) pairs that get their own model label: what the configuration names."""
        known = {(p.name, m) for p in config.providers.values() for m in p.models or ()}
        for targets in config.routes.values():
            for target in targets:
                name, _, model = target.partition("/")
                known.add((name, model))
        self.known_models = frozenset(known)

    def model_label(self, provider: str | None, model: str | None) -> str:
        if provider is None or model is None:
            return "-"
        return model if (provider, model) in self.known_models else OTHER

    def observe(self, record: AccessRecord) -> None:
        provider = record.provider or "-"
        model = self.model_label(record.provider, record.model)
        outcome = self._outcome_label(record.outcome)
        self._requests(record.endpoint, provider, model, str(record.status), outcome)(1)
        if record.endpoint in ("chat", "completions"):
            self._key_requests(record.key or UNAUTHENTICATED, outcome)(1)
        if record.tries:
            self._tries(record.tries)
        if record.retries:
            self._retries(record.retries)
        if record.fallback:
            self._fallbacks(provider)(1)
        if record.stream and record.status == 200:
            self._stream_duration(provider)(record.seconds)
            if record.first_chunk is not None:
                self._first_chunk(provider)(record.first_chunk)
        for tried, seconds in record.upstream_first_bytes:
            self._upstream_first_byte(tried)(seconds)
        if record.chunks_in:
            self._chunks(provider, "in")(record.chunks_in)
        if record.chunks_out:
            self._chunks(provider, "out")(record.chunks_out)
        if record.usage:
            for kind, field in _TOKEN_FIELDS:
                count = record.tokens(field)
                if count:
                    self._tokens(provider, model, kind)(count)
        for action in record.moderation:
            self.moderation_actions.labels(action).inc()
        if outcome in ("client_disconnected", "client_too_slow"):
            self.client_disconnects.labels(record.endpoint).inc()
        if record.keepalives:
            self._keepalives(record.keepalives)

    def _outcome_label(self, outcome: str | None) -> str:
        if not outcome:
            return OTHER
        label = self._outcomes.get(outcome)
        if label is None:
            label = outcome if _CODE.match(outcome) else OTHER
            if len(self._outcomes) < 1024:  # outcomes are the gateway's codes: a few dozen
                self._outcomes[outcome] = label
        return label


class ObservedHealth(Health):
    """Provider health that counts upstream failures and the cooldowns they start."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._metrics = metrics

    def failed(self, provider: ProviderConfig, code: str, cool_for: float = 0.0) -> None:
        was_cooling = self.cooling_for(provider) > 0
        super().failed(provider, code, cool_for)
        self._metrics.upstream_errors.labels(provider.name, code if _CODE.match(code) else OTHER).inc()
        if not was_cooling and self.cooling_for(provider) > 0:
            self._metrics.cooldowns.labels(provider.name).inc()


METRICS = web.AppKey("metrics", Metrics)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.flush()
    body = generate_latest(metrics.exposed)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_metrics(app: web.Application, config: Config | None = None) -> Metrics:
    metrics = app[METRICS] = Metrics(config)
    app.router.add_get("/metrics", metrics_endpoint)
    return metrics
