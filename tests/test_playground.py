"""The playground's page over HTTP: on by default on loopback, its caching headers and its CSP."""

from __future__ import annotations

import re

import pytest

from gateway.app import create_app
from gateway.config import ConfigError, ServerConfig, parse_config
from gateway.playground import STATIC
from tests.conftest import gateway_yaml


@pytest.fixture
def playground_gateway(aiohttp_client, upstream):
    async def make(setting: str = ""):
        yaml = gateway_yaml(upstream.url)
        if setting:
            yaml = yaml.replace("server: {", f"server: {{playground: {setting}, ", 1)
        return await aiohttp_client(create_app(parse_config(yaml, "test.yaml")))

    return make


async def test_the_page_is_served_at_root_and_playground_with_no_cache_and_a_strict_csp(playground_gateway):
    gateway = await playground_gateway()
    for path in ("/", "/playground"):
        response = await gateway.get(path)
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["ETag"]
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        html = await response.text()
        assert "<script>" not in html  # the CSP would block an inline script: the code is a separate file
        assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network


async def test_assets_are_linked_by_hash_and_cached_for_good_under_that_name(playground_gateway):
    gateway = await playground_gateway()
    html = await (await gateway.get("/")).text()
    links = re.findall(r'(?:src|href)="(/playground/[\w.]+\?v=[0-9a-f]+)"', html)
    assert {link.split("?")[0] for link in links} == {"/playground/playground.js", "/playground/playground.css",
                                                          "/playground/favicon.svg"}
    for link in links:
        response = await gateway.get(link)
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.headers["ETag"].strip('"') == link.split("v=")[1]
        assert (await response.read()) == (STATIC / link.split("/")[-1].split("?")[0]).read_bytes()
    unversioned = await gateway.get("/playground/playground.js")
    assert unversioned.headers["Cache-Control"] == "no-cache"
    assert unversioned.content_type == "text/javascript"


async def test_a_known_etag_gets_304_without_a_body(playground_gateway):
    gateway = await playground_gateway()
    first = await gateway.get("/")
    again = await gateway.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert (await again.read()) == b""


async def test_unknown_asset_is_an_openai_style_404(playground_gateway):
    gateway = await playground_gateway()
    response = await gateway.get("/playground/../config.py")
    assert response.status == 404
    response = await gateway.get("/playground/nope.js")
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_playground_false_turns_the_page_off(playground_gateway):
    gateway = await playground_gateway("false")
    assert (await gateway.get("/")).status == 404
    assert (await gateway.get("/playground/playground.js")).status == 404


def test_playground_defaults_to_on_only_on_loopback():
    assert ServerConfig().playground_enabled
    assert ServerConfig(host="localhost").playground_enabled
    assert ServerConfig(host="::1").playground_enabled
    assert not ServerConfig(host="0.0.0.0").playground_enabled
    assert ServerConfig(host="0.0.0.0", playground=True).playground_enabled
    assert not ServerConfig(playground=False).playground_enabled


def test_playground_must_be_a_boolean():
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  playground: 'yes'\nproviders:\n  - {name: demo, kind: demo}\n")
    assert [(p.path, p.line) for p in caught.value.problems] == [("server.playground", 2)]
