"""Shared fixtures: a fake upstream on loopback and a gateway configured in front of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import parse_config
from gateway.server import GatewayRunner
from tests.fakes.upstream import FakeUpstream
from tests.redis_server import redis, redis_server, redis_url  # noqa: F401  (fixtures: a real redis-server)
from tests.helpers import FAKE_KEY  # noqa: F401 - re-exported: test modules import it from here

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "recordings"


def recordings_dir() -> Path:
    """../shared/recordings; CI always has it, so there its absence is a failure, not a skip."""
    if not RECORDINGS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{RECORDINGS} is missing on CI")
        pytest.skip(f"{RECORDINGS} not present")
    return RECORDINGS


def gateway_yaml(upstream_url: str, *, timeouts: str = "{connect: 2, first_byte: 5, idle: 5, total: 30}",
                 keepalive: float = 15, middlewares: str = "[normalize, ratelimit, moderate]",
                 max_body_bytes: int = 65536, request_timeout: float | None = None,
                 extra_provider: str = "", extra_routes: str = "", extra: str = "",
                 resilience: str = "retry: {attempts: 1}\n    health: {max_failures: 0}") -> str:
    """A gateway in front of the fake upstream. By default no retries and no cooldown, so that each test
    sees the upstream's one answer; the fault tests pass their own `resilience`."""
    timeout = "" if request_timeout is None else f", request_timeout: {request_timeout}"
    return f"""
server: {{sse_keepalive: {keepalive}, max_body_bytes: {max_body_bytes}{timeout}}}
providers:
  - name: up
    kind: openai
    base_url: {upstream_url}/v1
    api_key: {FAKE_KEY}
    timeouts: {timeouts}
    {resilience}
  - name: ant
    kind: anthropic
    base_url: {upstream_url}
    api_key: {FAKE_KEY}
    timeouts: {timeouts}
    {resilience}
  - name: gem
    kind: gemini
    base_url: {upstream_url}
    api_key: {FAKE_KEY}
    timeouts: {timeouts}
    {resilience}
  - name: demo
    kind: demo
    models: [echo]
    token_interval: 0
{extra_provider}
routes:
  chat: [up/gpt-4o-mini, demo/echo]
{extra_routes}
middlewares: {middlewares}
{extra}
"""


class GatewayTestServer(TestServer):
    """The app on a loopback port, served as `gateway serve` serves it (gateway/server.py)."""

    async def _make_runner(self, **kwargs) -> web.AppRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
async def upstream(aiohttp_server):
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("")).rstrip("/")
    return fake


@pytest.fixture
def make_gateway(aiohttp_client, upstream):
    """`await make_gateway(**gateway_yaml options)` gives a test client for a gateway in front of `upstream`."""

    async def make(**options):
        config = parse_config(gateway_yaml(upstream.url, **options), "test.yaml")
        return await aiohttp_client(GatewayTestServer(create_app(config)))

    return make


@pytest.fixture
async def gateway(make_gateway):
    return await make_gateway()
