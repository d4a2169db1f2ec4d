"""/healthz (alive), /readyz (can serve, with reasons), /admin/health (the provider report, for admins)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from tests.conftest import GatewayTestServer
from tests.helpers import free_port

ADMIN_KEY = "sk-admin-0123456789abcdef"
DEMO = "  - {name: demo, kind: demo, models: [echo], token_interval: 0}\n"


@pytest.fixture
def gateway_of(aiohttp_client):
    async def make(text: str):
        return await aiohttp_client(GatewayTestServer(create_app(parse_config(text, "probes.yaml"))))
    return make


async def test_healthz_is_a_bare_liveness_probe_even_with_verbose(gateway):
    response = await gateway.get("/healthz?verbose=1")
    assert response.status == 200 and await response.json() == {"status": "ok"}


async def test_admin_health_answers_a_loopback_peer_with_the_provider_report(gateway):
    response = await gateway.get("/admin/health")
    assert response.status == 200
    body = await response.json()
    assert body["providers"]["up"]["state"] == "ok" and body["config"]["generation"] == 1
    assert body["runtime"]["in_flight"] == 0


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
async def test_admin_health_through_a_proxy_on_loopback_needs_an_admin_key(gateway_of, header):
    gateway = await gateway_of(f"server: {{admin_keys: [{hash_key(ADMIN_KEY.encode())}]}}\nproviders:\n{DEMO}")
    refused = await gateway.get("/admin/health", headers={header: "203.0.113.9"})
    assert refused.status == 401
    error = (await refused.json())["error"]
    assert error["code"] == "admin_key_required" and "providers" not in await refused.text()
    wrong = await gateway.get("/admin/health", headers={header: "203.0.113.9", "Authorization": "Bearer sk-nope"})
    assert wrong.status == 401
    allowed = await gateway.get("/admin/health", headers={header: "203.0.113.9",
                                                          "Authorization": f"Bearer {ADMIN_KEY}"})
    assert allowed.status == 200 and "demo" in (await allowed.json())["providers"]


async def test_admin_keys_must_be_sha256_digests():
    from gateway.config import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(f"server: {{admin_keys: [{ADMIN_KEY}]}}\nproviders:\n{DEMO}", "probes.yaml")
    assert [p.path for p in info.value.problems] == ["server.admin_keys[0]"]


async def test_readyz_is_ready_when_each_route_has_a_provider_to_try(gateway):
    response = await gateway.get("/readyz")
    assert response.status == 200 and await response.json() == {"status": "ready"}


async def test_readyz_names_a_route_whose_providers_are_all_disabled(gateway_of):
    text = ("providers:\n" + DEMO + "  - {name: dormant, kind: openai, base_url: 'http://127.0.0.1:9/v1', "
            "api_key: '${SURELY_UNSET_PROBE_KEY}'}\nroutes:\n  ok: [demo/echo]\n  dark: [dormant/m]\n")
    gateway = await gateway_of(text)
    response = await gateway.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["status"] == "not_ready"
    assert body["reasons"] == ["route 'dark': no provider can be tried (disabled or cooling down)"]
    assert "SURELY_UNSET_PROBE_KEY" not in await response.text()  # that detail is the admin view's


async def test_readyz_says_when_the_redis_limits_backend_does_not_answer(gateway_of):
    text = (f"providers:\n{DEMO}middlewares: [normalize, ratelimit]\n"
            f"limits: {{backend: redis, url: 'redis://127.0.0.1:{free_port()}/0'}}\n"
            f"keys:\n  - {{id: k, sha256: {'ab' * 32}, limits: {{requests_per_minute: 5}}}}\n")
    gateway = await gateway_of(text)
    response = await gateway.get("/readyz")
    assert response.status == 503
    reasons = (await response.json())["reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("limits backend: redis does not answer")


def test_nginx_site_does_not_expose_the_admin_view():
    conf = (Path(__file__).resolve().parents[1] / "deploy" / "nginx" / "gateway.conf").read_text()
    block = re.search(r"location /admin \{(.*?)\}", conf, re.S)
    assert block and "return 404" in block.group(1) and "proxy_pass" not in block.group(1)
