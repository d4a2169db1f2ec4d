"""CORS over HTTP: preflights, listed and unlisted origins, and the headers on streams and on errors."""

from __future__ import annotations

import hashlib

import pytest

from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.cors import EXPOSED_HEADERS
from tests.conftest import gateway_yaml
from tests.fakes.upstream import chat_chunk, sse

ALLOWED = "http://app.localhost:5173"
OTHER = "http://evil.localhost:8000"
KEY = "gwk-browser-0123456789abcdef"
KEYS = f"""
keys:
  - id: browser
    sha256: {hashlib.sha256(KEY.encode()).hexdigest()}
    limits: {{requests_per_minute: 2}}
"""
CHAT = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def with_cors(yaml: str, cors: str = f"{{origins: ['{ALLOWED}'], max_age: 120}}") -> str:
    return yaml.replace("server: {", f"server: {{cors: {cors}, ", 1)


@pytest.fixture
def cors_gateway(aiohttp_client, upstream):
    async def make(extra: str = "", cors: str | None = None):
        yaml = gateway_yaml(upstream.url, extra=extra)
        config = parse_config(with_cors(yaml, cors) if cors else with_cors(yaml), "test.yaml")
        return await aiohttp_client(create_app(config))

    return make


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type"}


def answer(upstream) -> None:
    upstream.stream(sse(chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Hi"}),
                        chat_chunk({}, "stop")))


async def test_cors_is_off_by_default_a_preflight_gets_405_and_no_cors_header(gateway):
    response = await gateway.options("/v1/chat/completions", headers=preflight(ALLOWED))
    assert response.status == 405
    assert "Access-Control-Allow-Origin" not in response.headers
    response = await gateway.get("/v1/models", headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_preflight_from_a_listed_origin_is_answered_204(cors_gateway):
    gateway = await cors_gateway()
    for path in ("/v1/chat/completions", "/v2/chat/completions", "/v2/models"):
        response = await gateway.options(path, headers=preflight(ALLOWED))
        assert response.status == 204, path
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "x-request-id", "last-event-id"} <= allowed
        assert {"GET", "POST"} <= {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert response.headers["Access-Control-Max-Age"] == "120"
        assert "Origin" in response.headers["Vary"]


async def test_preflight_from_an_unlisted_origin_is_refused(cors_gateway):
    gateway = await cors_gateway()
    response = await gateway.options("/v1/chat/completions", headers=preflight(OTHER))
    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert (await response.json())["error"]["code"] == "cors_origin_not_allowed"
    response = await gateway.options("/v1/chat/completions", headers=preflight(ALLOWED, "DELETE"))
    assert response.status == 403


async def test_a_listed_origin_is_echoed_with_the_exposed_headers(cors_gateway, upstream):
    gateway = await cors_gateway()
    answer(upstream)
    response = await gateway.post("/v1/chat/completions", json=CHAT, headers={"Origin": ALLOWED})
    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens", "x-stream-id", "x-stream-token"} == exposed
    assert "*" not in EXPOSED_HEADERS
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers  # keys go in a header, not a cookie


async def test_an_unlisted_origin_gets_no_allow_origin_but_vary(cors_gateway):
    gateway = await cors_gateway()
    response = await gateway.get("/v1/models", headers={"Origin": OTHER})
    assert response.status == 200  # the browser is what refuses: the server only withholds the header
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Expose-Headers" not in response.headers
    assert "Origin" in response.headers["Vary"]


async def test_a_streamed_answer_carries_the_cors_headers(cors_gateway, upstream):
    gateway = await cors_gateway()
    answer(upstream)
    response = await gateway.post("/v2/chat/completions", json={**CHAT, "stream": True},
                                  headers={"Origin": ALLOWED, "X-Request-Id": "browser-1"})
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "x-request-id" in response.headers["Access-Control-Expose-Headers"]
    assert response.headers["x-request-id"] == "browser-1"
    body = await response.text()
    assert '"Hi"' in body and body.endswith("data: [DONE]\n\n")


async def test_error_responses_carry_the_cors_headers(cors_gateway, upstream):
    gateway = await cors_gateway(extra=KEYS)
    origin = {"Origin": ALLOWED}
    missing = await gateway.post("/v1/chat/completions", json=CHAT, headers=origin)
    assert missing.status == 401
    assert missing.headers["Access-Control-Allow-Origin"] == ALLOWED
    bearer = {**origin, "Authorization": f"Bearer {KEY}"}
    for _ in range(3):  # the budget is 2 a minute
        answer(upstream)
        limited = await gateway.post("/v1/chat/completions", json=CHAT, headers=bearer)
        if limited.status != 200:
            break
    assert limited.status == 429
    assert limited.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "retry-after" in limited.headers["Access-Control-Expose-Headers"]
    assert "Retry-After" in limited.headers
    bad = await gateway.post("/v1/chat/completions", data=b"{not json", headers=bearer)
    assert bad.status == 400 and bad.headers["Access-Control-Allow-Origin"] == ALLOWED
    unknown = await gateway.get("/v1/nope", headers=origin)
    assert unknown.status == 404 and unknown.headers["Access-Control-Allow-Origin"] == ALLOWED
    wrong_method = await gateway.get("/v1/chat/completions", headers=origin)
    assert wrong_method.status == 405 and wrong_method.headers["Access-Control-Allow-Origin"] == ALLOWED


async def test_star_allows_any_origin_by_echoing_it(cors_gateway):
    gateway = await cors_gateway(cors="{origins: ['*']}")
    response = await gateway.options("/v1/models", headers=preflight(OTHER, "GET"))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == OTHER
    assert response.headers["Access-Control-Max-Age"] == "600"


async def test_origins_are_compared_case_insensitively(cors_gateway):
    gateway = await cors_gateway(cors="{origins: ['HTTP://App.Localhost:5173']}")
    response = await gateway.get("/v1/models", headers={"Origin": ALLOWED})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED


BAD_CORS = [
    ("trailing slash", "{origins: ['http://localhost:5173/']}", "server.cors.origins[0]", "trailing '/'"),
    ("a path", "{origins: ['http://localhost:5173/app']}", "server.cors.origins[0]", "scheme://host"),
    ("no scheme", "{origins: ['localhost:5173']}", "server.cors.origins[0]", "scheme://host"),
    ("empty list", "{origins: []}", "server.cors.origins", "non-empty list"),
    ("not a list", "{origins: 'http://localhost'}", "server.cors.origins", "non-empty list"),
    ("missing origins", "{max_age: 5}", "server.cors", "origins"),
    ("negative max_age", "{origins: ['*'], max_age: -1}", "server.cors.max_age", "at least 0"),
    ("unknown key", "{origins: ['*'], credentials: true}", "server.cors.credentials", "unknown key"),
    ("not a mapping", "[1]", "server.cors", "mapping"),
]


@pytest.mark.parametrize("cors,path,words", [c[1:] for c in BAD_CORS], ids=[c[0] for c in BAD_CORS])
def test_bad_cors_config_names_the_key(cors, path, words):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"server:\n  cors: {cors}\nproviders:\n  - {{name: demo, kind: demo}}\n")
    assert [p.path for p in caught.value.problems] == [path]
    assert words in caught.value.problems[0].message
    assert caught.value.problems[0].line == 2


def test_cors_config_parsed():
    config = parse_config("server:\n  cors: {origins: ['http://localhost:5173', 'https://[::1]:8443'], "
                          "max_age: 60}\nproviders:\n  - {name: demo, kind: demo}\n")
    assert config.server.cors.origins == ("http://localhost:5173", "https://[::1]:8443")
    assert config.server.cors.max_age == 60
    assert parse_config("providers:\n  - {name: demo, kind: demo}\n").server.cors is None
