"""End to end, as deployed on several instances: real nginx (deploy/nginx/gateway.conf) in front of two
`python -m gateway serve` processes sharing one real redis-server. Streams spread over both; one instance is
killed with SIGKILL mid-load: every stream on the survivor completes, every stream on the dead one ends at the
client as an error (never an answer that looks complete), new requests go to the survivor, and the limits stay
shared (the survivor counts the dead instance's stream slots until they expire).

The fake provider says in each stream's first chunk which instance called it (each instance has its own
base_url path), then holds every stream until the test lets them go: no timing assumptions.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from tests.helpers import digest, free_port
from tests.nginx_stack import (ROOT, SITE, TIMEOUT, chunk, log_of, nginx_binary, nginx_conf, read_event, render_site,
                               stop, wait_until_serving)
from tests.redis_server import RedisServer

KEY = "gwk-load-0123456789abcdef"
STREAMS = 12  # also the key's concurrent_streams limit
SLOTS = "gateway:limits:{load}:streams"
HEADERS = {"Authorization": f"Bearer {KEY}"}


class HeldProvider:
    """OpenAI-compatible; its first content chunk names the instance ("a:" or "b:"), then it waits on `gate`."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.holding = 0
        self.app = web.Application()
        self.app.router.add_post("/{instance}/v1/chat/completions", self.chat)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(chunk({"role": "assistant", "content": ""}))
            await response.write(chunk({"content": request.match_info["instance"] + ":"}))
            if body.get("stream"):
                self.holding += 1
                try:
                    async with asyncio.timeout(TIMEOUT * 3):
                        await self.gate.wait()
                finally:
                    self.holding -= 1
            await response.write(chunk({"content": " world"}))
            await response.write(chunk({}, finish="stop"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the instance that called died
        return response


def config_text(provider_port: int, port: int, instance: str, redis_url: str) -> str:
    return f"""
server: {{host: 127.0.0.1, port: {port}, shutdown_grace: 2}}
providers:
  - name: fake
    kind: openai
    base_url: http://127.0.0.1:{provider_port}/{instance}/v1
    api_key: sk-test-instances0123456789
    models: [m1]
    timeouts: {{connect: 2, first_byte: 20, idle: 40, total: 60}}
keys:
  - {{id: load, sha256: {digest(KEY)}, limits: {{concurrent_streams: {STREAMS}}}}}
limits: {{backend: redis, url: "{redis_url}"}}
middlewares: [normalize, ratelimit]
"""


async def consume(response: aiohttp.ClientResponse) -> tuple[list[bytes], bool]:
    """The stream's events, and whether the client saw it fail (a cut connection or an error event)."""
    events: list[bytes] = []
    try:
        while (data := await read_event(response)) is not None:
            events.append(data)
    except (aiohttp.ClientError, ConnectionError):
        return events, True
    return events, any(e != b"[DONE]" and "error" in json.loads(e) for e in events)


def content(events: list[bytes]) -> str:
    chunks = [json.loads(e) for e in events if e != b"[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


def stream_body(stream: bool = True) -> dict:
    return {"model": "fake/m1", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def deployment(aiohttp_server, tmp_path):
    """nginx -> two gateway processes (a, b) -> the held provider; both on one redis-server."""
    nginx = nginx_binary()
    redis_server = RedisServer(tmp_path)
    await redis_server.start()
    processes: list[subprocess.Popen] = []
    try:
        provider = HeldProvider()
        upstream = await aiohttp_server(provider.app, host="127.0.0.1")
        ports = {"a": free_port(), "b": free_port()}
        gateways = {}
        for instance, port in ports.items():
            config = tmp_path / f"{instance}.yaml"
            config.write_text(config_text(upstream.port, port, instance, redis_server.url))
            log = tmp_path / f"gateway-{instance}.log"
            with log.open("wb") as out:
                gateways[instance] = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "serve", "--config", str(config)], cwd=ROOT,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            processes.append(gateways[instance])
            await wait_until_serving(f"http://127.0.0.1:{port}/healthz", gateways[instance], log)
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        nginx_port = free_port()
        site = prefix / "gateway.conf"
        site.write_text(render_site(SITE.read_text(), nginx_port, [ports["a"], ports["b"]], prefix))
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, site))
        command = [nginx, "-p", f"{prefix}/", "-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=TIMEOUT)
        assert checked.returncode == 0, checked.stderr
        with (prefix / "stderr.log").open("wb") as out:
            processes.append(subprocess.Popen([*command, "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        await wait_until_serving(f"http://127.0.0.1:{nginx_port}/healthz", processes[-1], prefix / "error.log")
        yield provider, gateways, f"http://127.0.0.1:{nginx_port}", redis_server.url, tmp_path
    finally:
        for process in reversed(processes):
            stop(process)
        redis_server.stop()


async def test_sigkill_of_one_instance_mid_load(deployment):
    provider, gateways, url, redis_url, tmp = deployment
    redis = aioredis.from_url(redis_url)
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(TIMEOUT * 3):
                responses = await asyncio.gather(*(
                    session.post(f"{url}/v1/chat/completions", json=stream_body(), headers=HEADERS)
                    for _ in range(STREAMS)))
                assert [r.status for r in responses] == [200] * STREAMS, [await r.text() for r in responses]
                while provider.holding < STREAMS:
                    await asyncio.sleep(0.02)
                # Each stream's first content names the instance it runs on.
                firsts = []
                for response in responses:
                    seen: list[bytes] = []
                    while not content(seen):
                        data = await read_event(response)
                        assert data is not None
                        seen.append(data)
                    firsts.append((seen, content(seen)[0]))
                on = [instance for _, instance in firsts]
                assert set(on) == {"a", "b"}, f"nginx sent every stream to one instance: {on}"
                assert await redis.zcard(SLOTS) == STREAMS  # both instances hold their slots in one set

                dead = gateways["a"]
                os.killpg(dead.pid, signal.SIGKILL)
                dead.wait(timeout=TIMEOUT)
                provider.gate.set()

                ends = [await consume(response) for response in responses]
                for response in responses:
                    response.release()
                complete = 0
                for (seen, instance), (rest, failed) in zip(firsts, ends):
                    events = seen + rest
                    done = bool(events) and events[-1] == b"[DONE]"
                    if instance == "b":
                        assert done and not failed and content(events) == "b: world", (events, failed)
                        complete += 1
                    else:
                        assert failed, f"a stream on the killed instance ended without an error: {events}"
                        assert not (done and content(events) == "a: world"), events
                    if done and not failed:  # what a client counts as a complete answer
                        assert content(events).endswith(" world"), events
                assert complete == on.count("b")

                # New requests go to the survivor.
                for _ in range(4):
                    async with session.post(f"{url}/v1/chat/completions", json=stream_body(False),
                                            headers=HEADERS) as response:
                        assert response.status == 200, await response.text()
                        answer = await response.json()
                    assert answer["choices"][0]["message"]["content"] == "b: world"

                # The limits stay shared: the survivor counts the dead instance's slots (until they expire).
                held_by_dead = on.count("a")
                while await redis.zcard(SLOTS) != held_by_dead:  # the survivor's finished streams gave theirs back
                    await asyncio.sleep(0.02)
                provider.gate.clear()
                more = await asyncio.gather(*(
                    session.post(f"{url}/v1/chat/completions", json=stream_body(), headers=HEADERS)
                    for _ in range(STREAMS)))
                statuses = sorted(r.status for r in more)
                refused = [await r.json() for r in more if r.status == 429]
                provider.gate.set()
                for response in more:
                    await consume(response)
                    response.release()
        except TimeoutError:
            pytest.fail(f"the deployment did not finish within its bound:\n{log_of(tmp / 'gateway-b.log')}")
        finally:
            await redis.aclose()
    assert statuses == [200] * (STREAMS - held_by_dead) + [429] * held_by_dead, statuses
    assert all((r["error"]["code"], r["error"]["type"]) == ("rate_limit_exceeded", "concurrent_streams")
               for r in refused), refused
