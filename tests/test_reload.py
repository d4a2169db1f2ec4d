"""SIGHUP reloads providers.yaml in a real `gateway serve`: new requests get the new config, a stream in
flight finishes on its own, a file with problems is refused with its problems logged and changes nothing."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import orjson

from gateway.auth import hash_key
from gateway.config import Config
from tests.helpers import free_port
from tests.serving import BOUND, served

OLD_KEY, NEW_KEY = "sk-old-client-key-0123456789", "sk-new-client-key-0123456789"


def _config(port: int, key: str, routes: str = "", logging: str = "") -> str:
    return (f"server: {{port: {port}, shutdown_grace: 5}}\n{logging}"
            "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0.05}\n"
            f"keys:\n  - {{id: k, sha256: {hash_key(key.encode())}}}\n{routes}")


def _chat(model: str, stream: bool = False, words: int = 3) -> dict:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": " ".join(["word"] * words)}]}


def _auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


async def _admin(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(f"{url}/admin/health") as response:
        return await response.json()


async def _until(predicate) -> None:
    async with asyncio.timeout(BOUND):  # hang guard
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_sighup_reloads_routes_and_keys_and_a_stream_in_flight_finishes_on_its_config(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with served(_config(port, OLD_KEY), port, tmp_path) as (gateway, log), aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json=_chat("demo/echo", stream=True, words=80),
                                headers=_auth(OLD_KEY)) as streaming:
            assert streaming.status == 200
            await streaming.content.readline()  # the stream has begun on the old config
            (tmp_path / "providers.yaml").write_text(_config(port, NEW_KEY, "routes:\n  fresh: [demo/echo]\n"))
            gateway.send_signal(signal.SIGHUP)

            async def new_key_works() -> bool:
                async with session.post(f"{url}/v1/chat/completions", json=_chat("fresh"),
                                        headers=_auth(NEW_KEY)) as response:
                    return response.status == 200

            await _until(new_key_works)  # the new key, on the new route
            assert not streaming.content.at_eof()  # while the old stream still runs
            rest = await streaming.read()
        assert rest.endswith(b"data: [DONE]\n\n") and b'"finish_reason":"stop"' in rest
        async with session.post(f"{url}/v1/chat/completions", json=_chat("demo/echo"),
                                headers=_auth(OLD_KEY)) as refused:
            assert refused.status == 401  # the old key is gone for new requests
        assert (await _admin(session, url))["config"]["generation"] == 2
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(BOUND) == 0
    assert "reloaded " in log.read_text()


async def test_sighup_with_an_invalid_file_keeps_the_old_config_and_logs_its_problems(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with served(_config(port, OLD_KEY), port, tmp_path) as (gateway, log), aiohttp.ClientSession() as session:
        (tmp_path / "providers.yaml").write_text("server: {port: eighty}\nproviders:\n  - {name: x, kind: mystery}\n")
        gateway.send_signal(signal.SIGHUP)

        async def refused() -> bool:
            return (await _admin(session, url))["config"]["reloads_refused"] == 1

        await _until(refused)
        async with session.post(f"{url}/v1/chat/completions", json=_chat("demo/echo"),
                                headers=_auth(OLD_KEY)) as response:
            assert response.status == 200
            assert orjson.loads(await response.read())["object"] == "chat.completion"
        assert (await _admin(session, url))["config"]["generation"] == 1
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(BOUND) == 0
    text = log.read_text()
    assert "reload refused" in text and "server.port: must be an integer" in text
    assert "providers[0].kind" in text and "Traceback" not in text


def _parsed(keys: str, limits: str = "") -> Config:
    from gateway.config import parse_config

    return parse_config("providers:\n  - {name: demo, kind: demo, models: [echo]}\n"
                        f"middlewares: [normalize, ratelimit]\n{limits}keys:\n{keys}", "reload.yaml")


def _key(name: str, rpm: int) -> str:
    return f"  - {{id: {name}, sha256: {hash_key(name.encode())}, limits: {{requests_per_minute: {rpm}}}}}\n"


async def test_reload_keeps_the_memory_budgets_of_keys_that_still_exist():
    from gateway.limits import MemoryLimits, hand_over
    from gateway.metrics import Metrics

    old = _parsed(_key("kept", 5) + _key("gone", 5) + _key("changed", 5))
    limiter = MemoryLimits(Metrics(old))
    keys = {key.id: key for key in old.keys}
    for name in keys:
        await limiter.admit(keys[name], 1)
    new = _parsed(_key("kept", 5) + _key("changed", 9))
    assert hand_over(limiter, old, new) is limiter
    assert set(limiter.states) == {"kept", "changed"}
    assert limiter.states["kept"].requests.level == 4  # still spent: a reload is no way around a limit
    assert limiter.states["changed"].requests.limit == 9


async def test_reload_keeps_the_redis_client_when_the_url_did_not_change():
    from gateway.limits import create_limiter, hand_over
    from gateway.metrics import Metrics

    redis = "limits: {backend: redis, url: 'redis://127.0.0.1:6390/0'}\n"
    old = _parsed(_key("k", 5), redis)
    limiter = create_limiter(old, Metrics(old))
    try:
        assert hand_over(limiter, old, _parsed(_key("k", 7), redis)) is limiter
        moved = "limits: {backend: redis, url: 'redis://127.0.0.1:6391/0'}\n"
        assert hand_over(limiter, old, _parsed(_key("k", 5), moved)) is None  # a new URL: a new client
    finally:
        await limiter.close()


async def test_a_redis_limits_backend_is_pinged_at_start_and_its_state_logged(tmp_path):
    port = free_port()
    config = (f"server: {{port: {port}}}\nproviders:\n  - {{name: demo, kind: demo, models: [echo]}}\n"
              "middlewares: [normalize, ratelimit]\n"
              f"limits: {{backend: redis, url: 'redis://127.0.0.1:{free_port()}/0'}}\n"
              f"keys:\n{_key('k', 5)}")
    async with served(config, port, tmp_path) as (gateway, log):
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(BOUND) == 0
    assert "limits backend: redis does not answer" in log.read_text()


async def _reloaded(session: aiohttp.ClientSession, url: str, gateway, path, text: str) -> None:
    path.write_text(text)
    gateway.send_signal(signal.SIGHUP)

    async def second_generation() -> bool:
        return (await _admin(session, url))["config"]["generation"] == 2

    await _until(second_generation)


def _around(text: str, mark: str) -> tuple[list[str], list[str]]:
    """The log's lines before the first that holds `mark`, and after it."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if mark in line), None)
    assert at is not None, text
    return lines[:at], lines[at + 1:]


def _json_lines(lines: list[str]) -> list[dict]:
    return [orjson.loads(line) for line in lines if line.startswith("{")]


async def test_sighup_applies_a_changed_logging_section(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with served(_config(port, OLD_KEY), port, tmp_path) as (gateway, log), aiohttp.ClientSession() as session:
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200  # logged at DEBUG: not shown at INFO
        async with session.post(f"{url}/v1/chat/completions", json=_chat("demo/echo"),
                                headers=_auth(OLD_KEY)) as response:
            assert response.status == 200  # logged at INFO, in text
        await _reloaded(session, url, gateway, tmp_path / "providers.yaml",
                        _config(port, OLD_KEY, logging="logging: {level: DEBUG, format: json}\n"))
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200  # now shown, in JSON
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(BOUND) == 0
    before, after = _around(log.read_text(), '"message":"reload: logging now level DEBUG, format json"')
    assert not [line for line in before if "/healthz" in line]  # at INFO,
    assert [line for line in before if line.startswith("20") and "request id=" in line and "/v1/chat" in line]
    probes = [line for line in _json_lines(after) if line.get("path") == "/healthz"]
    assert len(probes) == 1 and probes[0]["level"] == "DEBUG" and probes[0]["event"] == "request"
    assert [line for line in after if not line.startswith("{")] == []  # every line JSON


async def test_sighup_keeps_the_command_line_s_log_level_over_the_file_s(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with served(_config(port, OLD_KEY), port, tmp_path, "--log-level", "DEBUG") as (gateway, log), \
            aiohttp.ClientSession() as session:
        await _reloaded(session, url, gateway, tmp_path / "providers.yaml",
                        _config(port, OLD_KEY, logging="logging: {level: WARNING, format: json}\n"))
        async with session.get(f"{url}/healthz") as response:
            assert response.status == 200
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(BOUND) == 0
    _, after = _around(log.read_text(), '"message":"reload: logging now format json"')
    probes = [line for line in _json_lines(after) if line.get("path") == "/healthz"]
    assert len(probes) == 1 and probes[0]["level"] == "DEBUG"  # --log-level DEBUG still wins over WARNING
