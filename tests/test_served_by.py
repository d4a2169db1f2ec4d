"""Who answers: the shipped demo provider never answers a production request unless named, every answer names
the provider and model that served it, and /v1/models lists providers that have no `models:` list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import parse_config
from tests.conftest import GatewayTestServer
from tests.fakes.upstream import Reply, chat_chunk, sse

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = (ROOT / "gateway" / "providers.yaml").read_text()
KEY_VARS = sorted(set(re.findall(r"\$\{(\w+)\}", SHIPPED)))


def shipped_config(upstream_url: str, enable_openai: bool, monkeypatch) -> str:
    """The shipped providers.yaml, its openai provider pointed at the fake upstream, no other real provider."""
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    if enable_openai:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-shipped0123456789")
    text, count = re.subn(r"https://api\.openai\.com/v1", f"{upstream_url}/v1", SHIPPED)
    assert count == 1
    return text.replace("max_failures: 3", "max_failures: 0")


async def shipped_gateway(aiohttp_client, upstream, monkeypatch, enable_openai: bool):
    config = parse_config(shipped_config(upstream.url, enable_openai, monkeypatch), "providers.yaml")
    return await aiohttp_client(GatewayTestServer(create_app(config)))


def chat(model: str, stream: bool = False) -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True])
async def test_shipped_config_never_answers_a_production_request_with_demo_text(aiohttp_client, upstream,
                                                                              monkeypatch, stream):
    """openai is enabled and fails: the `chat` route answers the failure, not demo text."""
    client = await shipped_gateway(aiohttp_client, upstream, monkeypatch, enable_openai=True)
    upstream.queue(*[Reply(status=500, steps=[b'{"error": {"message": "down"}}'],
                           headers={"Content-Type": "application/json"})] * 5)
    response = await client.post("/v1/chat/completions", json=chat("chat", stream))
    text = await response.text()
    assert response.status >= 500, text
    assert "echo" not in text.lower() and "demo" not in response.headers.get("x-gateway-provider", "")
    # a name only the demo lists names the demo: it answers that one
    response = await client.post("/v1/chat/completions", json=chat("echo"))
    assert response.status == 200 and response.headers["x-gateway-provider"] == "demo"


async def test_demo_serves_when_no_real_provider_is_enabled_or_when_named(aiohttp_client, upstream, monkeypatch):
    # the quick start: no key set, so the route's real target is disabled (the keyless `local` provider is
    # enabled, but it is not in the route)
    client = await shipped_gateway(aiohttp_client, upstream, monkeypatch, enable_openai=False)
    response = await client.post("/v1/chat/completions", json=chat("chat"))
    assert response.status == 200, await response.text()
    assert response.headers["x-gateway-provider"] == "demo"
    assert response.headers["x-gateway-model"] == "echo"

    client = await shipped_gateway(aiohttp_client, upstream, monkeypatch, enable_openai=True)
    response = await client.post("/v1/chat/completions", json=chat("demo/echo"))
    assert response.status == 200, await response.text()
    assert response.headers["x-gateway-provider"] == "demo"


@pytest.mark.parametrize("stream", [False, True])
async def test_every_answer_says_who_served_it(make_gateway, upstream, stream):
    """For a route, the target that answered: here the first fails and the fallback answers."""
    client = await make_gateway(extra_provider="""  - name: second
    kind: openai
    base_url: {url}/v1
    api_key: sk-test-second0123456789
    retry: {{attempts: 1}}
    health: {{max_failures: 0}}""".format(url=upstream.url),
                                extra_routes="  both: [up/first-model, second/second-model]")
    upstream.queue(Reply(status=500, steps=[b'{"error": {"message": "down"}}'],
                         headers={"Content-Type": "application/json"}))
    upstream.stream(sse(chat_chunk({"role": "assistant", "content": "hi"}), chat_chunk({}, "stop")))
    response = await client.post("/v1/chat/completions", json=chat("both", stream))
    body = await response.text()
    assert response.status == 200, body
    assert response.headers["x-gateway-provider"] == "second"
    assert response.headers["x-gateway-model"] == "second-model"

    upstream.stream(sse(chat_chunk({"role": "assistant", "content": "hi"}), chat_chunk({}, "stop")))
    response = await client.post("/v1/chat/completions", json=chat("up/gpt-4o-mini", stream))
    assert response.status == 200, await response.text()
    assert (response.headers["x-gateway-provider"], response.headers["x-gateway-model"]) == ("up", "gpt-4o-mini")


async def test_models_lists_enabled_providers_without_a_models_list(aiohttp_client, aiohttp_server):
    """A local server (Ollama, vLLM) is asked for its /models, once per cache period; one that cannot be
    asked is listed as '<provider>/*'."""
    asked: list[str] = []

    async def models(request: web.Request) -> web.Response:
        asked.append(request.headers.get("Authorization", ""))
        return web.json_response({"object": "list", "data": [{"id": "llama3.1:8b", "object": "model"},
                                                             {"id": "qwen2.5:7b", "object": "model"}]})

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404)

    local = web.Application()
    local.router.add_get("/v1/models", models)
    server = await aiohttp_server(local)
    broken = web.Application()
    broken.router.add_get("/v1/models", not_found)
    broken_server = await aiohttp_server(broken)
    config = parse_config(f"""
providers:
  - name: local
    kind: openai
    base_url: http://127.0.0.1:{server.port}/v1
    api_key: sk-local-0123456789abcdef
  - name: other
    kind: openai
    base_url: http://127.0.0.1:{broken_server.port}/v1
  - name: listed
    kind: openai
    base_url: http://127.0.0.1:{broken_server.port}/v1
    models: [m1]
""", "test.yaml")
    client = await aiohttp_client(GatewayTestServer(create_app(config)))
    for _ in range(2):
        response = await client.get("/v1/models")
        assert response.status == 200
        ids = [m["id"] for m in (await response.json())["data"]]
        assert ids == ["listed/m1", "local/llama3.1:8b", "local/qwen2.5:7b", "other/*"]
    assert asked == ["Bearer sk-local-0123456789abcdef"]  # cached: asked once


@pytest.mark.parametrize("stream", [False, True])
async def test_a_provider_error_says_which_provider_failed(make_gateway, upstream, stream):
    client = await make_gateway()
    upstream.queue(Reply(status=500, steps=[b'{"error": {"message": "down"}}'],
                         headers={"Content-Type": "application/json"}))
    response = await client.post("/v1/chat/completions", json=chat("up/gpt-4o-mini", stream))
    assert response.status == 502, await response.text()
    assert (response.headers["x-gateway-provider"], response.headers["x-gateway-model"]) == ("up", "gpt-4o-mini")
    # refused before any provider was tried: no provider is named
    response = await client.post("/v1/chat/completions", json={"model": "nope/x", "messages": []})
    assert response.status in (400, 404) and "x-gateway-provider" not in response.headers
