"""Client keys: 401 without a known key, 403 outside a key's models, ids (never keys) in logs and metrics,
`gateway hash-key`, and the secure default (no keys: loopback only unless `auth: none` is written)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.auth import KeyTable
from gateway.config import ClientKey, ConfigError, is_loopback, parse_config
from tests.fakes.upstream import Reply, chat_chunk, sse
from tests.helpers import bearer, digest, free_port, start_serve, stop_serve, wait_healthy

REPO = Path(__file__).resolve().parents[1]
KEY_A = "gwk-team-a-0123456789abcdefSECRET"
KEY_B = "gwk-team-b-fedcba9876543210SECRET"
OTHER = "gwk-not-a-configured-key-SECRET99"


KEYS = f"""
keys:
  - id: team-a
    sha256: {digest(KEY_A)}
  - id: team-b
    sha256: {digest(KEY_B).upper()}
    models: ["up/*", "chat"]
"""
CHAT = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ROLE = chat_chunk({"role": "assistant", "content": ""})
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def answer(upstream) -> None:
    upstream.stream(sse(ROLE, chat_chunk({"content": "Hi"}), chat_chunk({}, "stop"),
                        chat_chunk(choices=[], usage=USAGE)))


@pytest.fixture
async def keyed(make_gateway):
    return await make_gateway(extra=KEYS)


def assert_openai_error(body: dict, code: str) -> dict:
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return error


# ---------------------------------------------------------------------------------------------- 401

async def test_missing_key_is_a_401(keyed, upstream):
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Bearer "}, {"Authorization": f"Basic {KEY_A}"}):
        response = await keyed.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        error = assert_openai_error(await response.json(), "missing_api_key")
        assert "Authorization" in error["message"]
    assert upstream.received == []


async def test_wrong_key_is_a_401_that_never_shows_the_key(keyed, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    response = await keyed.post("/v1/chat/completions", json=CHAT, headers=bearer(OTHER))
    assert response.status == 401
    raw = await response.read()
    assert OTHER.encode() not in raw
    assert_openai_error(await response.json(), "invalid_api_key")
    assert OTHER not in caplog.text
    assert upstream.received == []


async def test_a_configured_key_passes_and_logs_show_its_id_only(keyed, upstream, caplog):
    caplog.set_level(logging.DEBUG)
    answer(upstream)
    answer(upstream)
    response = await keyed.post("/v1/chat/completions", json=CHAT, headers=bearer(KEY_A))
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "Hi"
    response = await keyed.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(KEY_B))
    assert response.status == 200
    assert (await response.read()).endswith(b"data: [DONE]\n\n")
    assert "key=team-a" in caplog.text and "key=team-b" in caplog.text
    for key in (KEY_A, KEY_B):
        assert key not in caplog.text
    # the client's key is not what goes upstream
    assert all(KEY_A not in str(r.headers) and KEY_B not in str(r.headers) for r in upstream.received)


async def test_without_keys_no_key_is_asked_for(gateway, upstream):
    answer(upstream)
    response = await gateway.post("/v1/chat/completions", json=CHAT)
    assert response.status == 200


# ---------------------------------------------------------------------------------------------- 403

@pytest.mark.parametrize("model", ["up/gpt-4o-mini", "up/anything", "chat"])
async def test_models_inside_the_allow_list_pass(keyed, upstream, model):
    answer(upstream)
    response = await keyed.post("/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(KEY_B))
    assert response.status == 200, await response.text()


async def test_a_route_is_allowed_by_the_model_it_resolves_to(make_gateway, upstream):
    gateway = await make_gateway(extra=f"""
keys:
  - {{id: ups, sha256: {digest(KEY_A)}, models: ["up/gpt-4o-*"]}}
""")
    answer(upstream)
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "chat"}, headers=bearer(KEY_A))
    assert response.status == 200


async def test_a_fallback_never_reaches_a_model_outside_the_allow_list(make_gateway, upstream):
    # the route chat is [up/gpt-4o-mini, demo/echo]; this key may call up/* only, not the route by name
    gateway = await make_gateway(extra=f"""
keys:
  - {{id: ups, sha256: {digest(KEY_A)}, models: ["up/*"]}}
""", resilience="retry: {attempts: 1}\n    health: {max_failures: 0}")
    upstream.queue(Reply(status=503, headers={"Content-Type": "application/json"}, steps=[b'{"error": "down"}']))
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "chat"}, headers=bearer(KEY_A))
    assert response.status == 502, "demo/echo would have answered, but the key may not use it"
    assert len(upstream.received) == 1


async def test_a_route_allowed_by_name_falls_back_to_any_of_its_targets(make_gateway, upstream):
    gateway = await make_gateway(extra=f"""
keys:
  - {{id: router, sha256: {digest(KEY_A)}, models: ["chat"]}}
""")
    upstream.queue(Reply(status=503, headers={"Content-Type": "application/json"}, steps=[b'{"error": "down"}']))
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "chat", "stream": False},
                                  headers=bearer(KEY_A))
    assert response.status == 200
    assert (await response.json())["model"] == "echo"


@pytest.mark.parametrize("model", ["demo/echo", "ant/claude-3-haiku", "echo"])
async def test_a_model_outside_the_allow_list_is_a_403(keyed, upstream, model):
    response = await keyed.post("/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(KEY_B))
    assert response.status == 403
    error = assert_openai_error(await response.json(), "model_not_allowed")
    assert error["param"] == "model"
    assert "team-b" in error["message"]
    assert upstream.received == []


async def test_models_list_needs_a_key_and_shows_what_it_may_use(keyed):
    response = await keyed.get("/v1/models")
    assert response.status == 401
    response = await keyed.get("/v1/models", headers=bearer(KEY_B))
    # "up" has no models list and its /models cannot be asked (the fake serves only POST): listed as up/*
    assert [m["id"] for m in (await response.json())["data"]] == ["up/*", "chat"]
    response = await keyed.get("/v1/models", headers=bearer(KEY_A))
    assert [m["id"] for m in (await response.json())["data"]] == ["demo/echo", "up/*", "ant/*", "gem/*", "chat"]


# A provider whose models list holds names with a slash, next to a provider those names start with.
SLASHED = """
  - name: openai
    kind: openai
    base_url: {url}/v1
    api_key: sk-test-openai-0123456789
    models: [gpt-4o]
    retry: {{attempts: 1}}
  - name: groq
    kind: openai
    base_url: {url}/v1
    api_key: gsk_test0123456789abcdef
    models: [openai/gpt-oss-120b, meta-llama/llama-4]
    retry: {{attempts: 1}}
"""


def _slashed_gateway(make_gateway, upstream, pattern: str):
    return make_gateway(extra_provider=SLASHED.format(url=upstream.url), extra=f"""
keys:
  - {{id: scoped, sha256: {digest(KEY_A)}, models: ["{pattern}"]}}
""")


async def test_a_key_limited_to_openai_is_not_served_by_groq_for_openai_slash_model(make_gateway, upstream):
    # 'openai/gpt-oss-120b' names the provider 'openai', which does not list it: not groq's model of that name
    gateway = await _slashed_gateway(make_gateway, upstream, "openai/*")
    answer(upstream)
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "openai/gpt-oss-120b"},
                                  headers=bearer(KEY_A))
    assert response.status == 404
    assert_openai_error(await response.json(), "model_not_found")
    assert upstream.received == []


@pytest.mark.parametrize("model", ["groq/openai/gpt-oss-120b", "meta-llama/llama-4"])
async def test_the_allow_list_is_checked_against_the_target_that_serves(make_gateway, upstream, model):
    gateway = await _slashed_gateway(make_gateway, upstream, "openai/*")
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(KEY_A))
    assert response.status == 403
    assert_openai_error(await response.json(), "model_not_allowed")
    assert upstream.received == []


@pytest.mark.parametrize("model", ["groq/openai/gpt-oss-120b", "meta-llama/llama-4"])
async def test_a_provider_prefixed_name_and_a_bare_slashed_name_reach_the_provider_listing_them(
        make_gateway, upstream, model):
    gateway = await _slashed_gateway(make_gateway, upstream, "groq/*")
    answer(upstream)
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(KEY_A))
    assert response.status == 200, await response.text()
    assert upstream.received[0].body["model"] == model.removeprefix("groq/")
    assert upstream.received[0].headers["Authorization"] == "Bearer gsk_test0123456789abcdef"


async def test_a_bare_name_allowed_by_pattern_is_not_enough_when_its_target_is_not(make_gateway, upstream):
    # the pattern matches the string the client wrote ('meta-llama/llama-4'), but the target is groq's
    gateway = await _slashed_gateway(make_gateway, upstream, "meta-llama/*")
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": "meta-llama/llama-4"},
                                  headers=bearer(KEY_A))
    assert response.status == 403
    assert upstream.received == []


# ---------------------------------------------------------------------------------------------- metrics

async def test_metrics_count_requests_by_key_id(keyed, upstream):
    answer(upstream)
    await keyed.post("/v1/chat/completions", json=CHAT, headers=bearer(KEY_A))
    await keyed.post("/v1/chat/completions", json=CHAT, headers=bearer(OTHER))
    await keyed.post("/v1/completions", json={"model": "demo/echo", "prompt": "x"}, headers=bearer(KEY_B))
    text = await (await keyed.get("/metrics")).text()
    assert 'gateway_key_requests_total{key="team-a",outcome="ok"} 1.0' in text
    assert 'gateway_key_requests_total{key="-",outcome="invalid_api_key"} 1.0' in text
    assert 'gateway_key_requests_total{key="team-b",outcome="model_not_allowed"} 1.0' in text
    assert OTHER not in text and KEY_A not in text


# ---------------------------------------------------------------------------------------------- key table

@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6, unique=True), st.text(max_size=40))
def test_key_table_finds_exactly_the_configured_keys(keys, probe):
    table = KeyTable(ClientKey(f"k{i}", digest(k)) for i, k in enumerate(keys))
    for i, key in enumerate(keys):
        assert table.find(key).id == f"k{i}"
    found = table.find(probe)
    assert (found is not None) == (probe in keys)


@given(st.text(alphabet="abc/-*?", max_size=12), st.text(alphabet="abc/-", max_size=12))
def test_model_patterns_match_as_fnmatchcase(pattern, name):
    import fnmatch

    key = ClientKey("k", digest("x"), (pattern,))
    assert KeyTable([key]).allows(key, name) == fnmatch.fnmatchcase(name, pattern)


# ---------------------------------------------------------------------------------------------- hash-key

@pytest.mark.parametrize("stdin", [b"test", b"test\n", b"test\r\n"])
def test_hash_key_prints_the_sha256_of_stdin(stdin):
    result = subprocess.run([sys.executable, "-m", "gateway", "hash-key"], input=stdin, capture_output=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0
    assert result.stdout.decode() == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"


def test_hash_key_refuses_an_empty_stdin():
    result = subprocess.run([sys.executable, "-m", "gateway", "hash-key"], input=b"\n", capture_output=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 1
    assert b"no key on stdin" in result.stderr


# ---------------------------------------------------------------------------------------------- config

PROVIDERS = "providers:\n  - {name: demo, kind: demo, models: [echo]}\n"


def config_problems(text: str) -> list:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    return info.value.problems


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "gateway.example.com", "localhost.evil"])
def test_other_hosts(host):
    assert not is_loopback(host)


def test_keyless_gateway_on_another_address_is_refused_with_the_host_line():
    text = f"server:\n  port: 8080\n  host: 0.0.0.0\n{PROVIDERS}"
    (problem,) = config_problems(text)
    assert problem.path == "server.host" and problem.line == 3
    assert "auth: none" in problem.message


def test_keyless_gateway_on_loopback_is_fine():
    config = parse_config(f"server: {{host: 127.0.0.1}}\n{PROVIDERS}")
    assert config.open_access and config.auth is None and config.keys == ()


def test_auth_none_written_out_serves_open_anywhere():
    config = parse_config(f"auth: none\nserver: {{host: 0.0.0.0}}\n{PROVIDERS}")
    assert config.open_access and config.auth == "none"


def test_keys_serve_anywhere():
    head = f"server: {{host: 0.0.0.0}}\n{PROVIDERS}middlewares: [normalize, ratelimit]\n"
    config = parse_config(head + textwrap.dedent(f"""\
        keys:
          - id: team-a
            sha256: {digest(KEY_A).upper()}
            models: ["openai/*", "anthropic/claude-*"]
            limits: {{requests_per_minute: 60, tokens_per_minute: 100000, concurrent_streams: 4}}
        limits: {{backend: redis, url: "redis://127.0.0.1:6390/1", on_backend_error: closed}}
        """))
    (key,) = config.keys
    assert (key.id, key.sha256, key.models) == ("team-a", digest(KEY_A), ("openai/*", "anthropic/claude-*"))
    assert (key.limits.requests_per_minute, key.limits.tokens_per_minute, key.limits.concurrent_streams) == (
        60, 100000, 4)
    assert not config.open_access
    assert (config.limits.backend, config.limits.url, config.limits.on_backend_error) == (
        "redis", "redis://127.0.0.1:6390/1", "closed")
    assert (config.limits.redis_pool_size, config.limits.redis_pool_wait) == (50, 2.0)  # the defaults


def test_the_redis_pool_is_sized_from_the_config():
    config = parse_config(f"{PROVIDERS}limits: {{backend: redis, redis_pool_size: 8, redis_pool_wait: 0.5}}\n")
    assert (config.limits.redis_pool_size, config.limits.redis_pool_wait) == (8, 0.5)


def test_auth_keys_without_keys_is_a_problem():
    (problem,) = config_problems(f"auth: keys\n{PROVIDERS}")
    assert problem.path == "auth" and problem.line == 1


def test_auth_none_with_keys_is_a_problem():
    problems = config_problems(f"auth: none\n{PROVIDERS}keys:\n  - {{id: a, sha256: {digest('x')}}}\n")
    assert [p.path for p in problems] == ["keys"]


@pytest.mark.parametrize("entry, path, words", [
    ("{id: a}", "keys[0]", "missing required key 'sha256'"),
    ("{id: a, sha256: abc}", "keys[0].sha256", "64 hex digits"),
    ("{id: 'a b', sha256: %s}" % digest("x"), "keys[0].id", "letters, digits"),
    ("{id: a, sha256: %s, colour: red}" % digest("x"), "keys[0].colour", "unknown key"),
    ("{id: a, sha256: %s, models: openai}" % digest("x"), "keys[0].models", "list of model patterns"),
    ("{id: a, sha256: %s, limits: {requests_per_minute: 0}}" % digest("x"), "keys[0].limits.requests_per_minute",
     "at least 1"),
    ("{id: a, sha256: %s, limits: {tokens_per_minute: 1.5}}" % digest("x"), "keys[0].limits.tokens_per_minute",
     "integer"),
    ("{id: a, sha256: %s, limits: {streams: 2}}" % digest("x"), "keys[0].limits.streams", "unknown key"),
])
def test_bad_key_entries(entry, path, words):
    problems = config_problems(f"{PROVIDERS}middlewares: [normalize, ratelimit]\nkeys:\n  - {entry}\n")
    problem = next(p for p in problems if p.path == path)
    assert words in problem.message
    assert problem.line == 5


def test_duplicate_ids_and_keys():
    text = f"{PROVIDERS}keys:\n  - {{id: a, sha256: {digest('x')}}}\n  - {{id: a, sha256: {digest('x')}}}\n"
    assert {p.path for p in config_problems(text)} == {"keys[1].id", "keys[1].sha256"}


def test_limits_without_the_ratelimit_middleware_are_a_problem():
    entry = f"{{id: a, sha256: {digest('x')}, limits: {{concurrent_streams: 1}}}}"
    text = f"{PROVIDERS}middlewares: [normalize]\nkeys:\n  - {entry}\n"
    (problem,) = config_problems(text)
    assert problem.path == "keys[0].limits" and "ratelimit" in problem.message


@pytest.mark.parametrize("limits, path", [
    ("{backend: disk}", "limits.backend"),
    ("{on_backend_error: maybe}", "limits.on_backend_error"),
    ("{backend: redis, url: 'http://x'}", "limits.url"),
    ("{url: 'redis://x'}", "limits.url"),
    ("{backend: redis, url: '${SURELY_UNSET_REDIS_URL}'}", "limits.url"),
    ("{size: 1}", "limits.size"),
    ("{backend: redis, redis_pool_size: 0}", "limits.redis_pool_size"),
    ("{backend: redis, redis_pool_size: 2.5}", "limits.redis_pool_size"),
    ("{backend: redis, redis_pool_wait: 0}", "limits.redis_pool_wait"),
    ("{redis_pool_size: 10}", "limits.redis_pool_size"),
])
def test_bad_limits_section(limits, path):
    problems = config_problems(f"{PROVIDERS}limits: {limits}\n")
    assert path in [p.path for p in problems]


def _gateway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)


def test_check_names_the_host_line(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text(f"{PROVIDERS}server:\n  host: 0.0.0.0\n")
    result = _gateway("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}: line 4: server.host: serving 0.0.0.0 without client keys" in result.stderr


def test_check_notes_an_open_gateway(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text(f"auth: none\n{PROVIDERS}server:\n  host: 0.0.0.0\n")
    result = _gateway("check", "--config", str(path))
    assert result.returncode == 0
    assert f"{path}: note: auth: none: 0.0.0.0 will be served without client keys" in result.stdout


def test_serve_refuses_a_keyless_host_flag(tmp_path):
    path = tmp_path / "open.yaml"
    path.write_text(f"server: {{host: 127.0.0.1}}\n{PROVIDERS}")
    result = _gateway("serve", "--config", str(path), "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "--host: serving 0.0.0.0 without client keys" in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_warns_when_open_on_another_address(tmp_path):
    port = free_port()
    path = tmp_path / "open.yaml"
    path.write_text(f"auth: none\nserver: {{host: 0.0.0.0, port: {port}, shutdown_grace: 2}}\n{PROVIDERS}")
    process = start_serve("--config", str(path))
    try:
        await wait_healthy(process, f"http://127.0.0.1:{port}")
    finally:
        code, stderr = stop_serve(process) if process.poll() is None else (process.returncode, process.stderr.read())
    assert code == 0, stderr
    assert "WARNING gateway: auth: none: serving 0.0.0.0 without client keys" in stderr
