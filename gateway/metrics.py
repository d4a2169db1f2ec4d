"""Prometheus metrics, one registry per application, served at GET /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

UNAUTHENTICATED = "-"  # the key label of requests without a known key


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests", "Completion requests by client key id, endpoint and outcome",
            ("key", "endpoint", "outcome"), registry=self.registry)
        self.rate_limited = Counter(
            "gateway_rate_limited", "Requests refused by a per-key limit, by key id and limit name",
            ("key", "limit"), registry=self.registry)
        self.limit_backend_errors = Counter(
            "gateway_limit_backend_errors",
            "Failed calls to the limit backend, by operation and the on_backend_error policy applied",
            ("backend", "operation", "on_backend_error"), registry=self.registry)

    def request(self, key_id: str | None, endpoint: str, outcome: str) -> None:
        self.requests.labels(key_id or UNAUTHENTICATED, endpoint, outcome).inc()


METRICS = web.AppKey("metrics", Metrics)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_metrics(app: web.Application) -> Metrics:
    metrics = app[METRICS] = Metrics()
    app.router.add_get("/metrics", metrics_endpoint)
    return metrics
