"""The deployment as shipped: nginx with deploy/nginx/gateway.conf in front of a `gateway serve` process.

A fake provider streams OpenAI chunks and, after the first content chunk, waits for the test to let it go
on: the client behind nginx must already hold that chunk, which proves that nothing in between buffers the
stream, with no timing assertion. Every wait is bounded, so a buffering proxy fails instead of hanging.
The systemd units are checked with `systemd-analyze verify` where it exists.

nginx must be installed (`apt-get install -y nginx`): without it these tests skip, except on CI, where
they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.helpers import free_port
from tests.nginx_stack import (ROOT, SITE, TIMEOUT, chunk, nginx_binary, nginx_conf, read_event, render_site, stop,
                               wait_until_serving)

UNITS = ROOT / "deploy" / "systemd"
MAX_BODY = 4 << 20  # the gateway's default server.max_body_bytes, which the site must match
MODEL = "fake/m1"


class FakeProvider:
    """An OpenAI-compatible provider: streams "Hello", then, if `gate` is set, waits on it, then " world"."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()  # the first content chunk is out and the stream is held on `gate`
        self.requests: list[dict] = []
        self.app = web.Application(client_max_size=2 * MAX_BODY)
        self.app.router.add_post("/v1/chat/completions", self.chat)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": ""}))
        await response.write(chunk({"content": "Hello"}))
        if self.gate is not None:
            self.waiting.set()
            async with asyncio.timeout(TIMEOUT):
                await self.gate.wait()
        await response.write(chunk({"content": " world"}))
        await response.write(chunk({}, finish="stop"))
        await response.write(b"data: " + orjson.dumps({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": "m1",
            "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class Stack:
    def __init__(self, tmp: Path, provider: FakeProvider, processes: list[subprocess.Popen], gateway_port: int,
                 nginx_port: int) -> None:
        self.tmp = tmp
        self.provider = provider
        self.processes = processes  # the gateway, then nginx
        self.gateway_port = gateway_port
        self.nginx_port = nginx_port
        self.url = f"http://127.0.0.1:{nginx_port}"


@pytest.fixture
async def stack_factory(aiohttp_server, tmp_path):
    """`await start(nginx)`: a fake provider, the gateway in front of it, nginx in front of the gateway."""
    processes: list[subprocess.Popen] = []

    async def start(nginx: str) -> Stack:
        provider = FakeProvider()
        upstream = await aiohttp_server(provider.app, host="127.0.0.1")
        gateway_port, nginx_port = free_port(), free_port()
        config = tmp_path / "providers.yaml"
        config.write_text(f"""
server: {{host: 127.0.0.1, port: {gateway_port}, shutdown_grace: 2}}
providers:
  - name: fake
    kind: openai
    base_url: http://127.0.0.1:{upstream.port}/v1
    api_key: sk-test-deploy0123456789
    models: [m1]
    timeouts: {{connect: 2, first_byte: 20, idle: 20, total: 60}}
middlewares: [normalize]
""")
        gateway_log = tmp_path / "gateway.log"
        with gateway_log.open("wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--config", str(config),
                 "--host", "127.0.0.1", "--port", str(gateway_port)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        await wait_until_serving(f"http://127.0.0.1:{gateway_port}/healthz", processes[-1], gateway_log)

        prefix = tmp_path / "nginx"
        prefix.mkdir()
        site = prefix / "gateway.conf"
        site.write_text(render_site(SITE.read_text(), nginx_port, gateway_port, prefix))
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, site))
        command = [nginx, "-p", f"{prefix}/", "-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=TIMEOUT)
        assert checked.returncode == 0, f"nginx -t rejected the config:\n{checked.stderr}\n{site.read_text()}"
        nginx_log = prefix / "stderr.log"
        with nginx_log.open("wb") as out:
            processes.append(subprocess.Popen(
                [*command, "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True))
        await wait_until_serving(f"http://127.0.0.1:{nginx_port}/healthz", processes[-1], prefix / "error.log")
        return Stack(tmp_path, provider, processes, gateway_port, nginx_port)

    try:
        yield start
    finally:
        for process in reversed(processes):
            stop(process)


def request_body(stream: bool, content: str = "hi") -> dict:
    return {"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": content}]}


async def test_stream_passes_nginx_unbuffered(stack_factory):
    stack = await stack_factory(nginx_binary())
    provider = stack.provider
    provider.gate = asyncio.Event()
    sent_id = "deploy-test-0123456789"
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(TIMEOUT):
                response = await session.post(f"{stack.url}/v2/chat/completions", json=request_body(True),
                                              headers={"X-Request-Id": sent_id, "Accept-Encoding": "gzip"})
        except TimeoutError:
            pytest.fail(f"no response head through nginx within {TIMEOUT} s while the provider held the stream "
                        f"after its first content chunk: something buffers it")
        async with response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert "Content-Length" not in response.headers
            assert "Content-Encoding" not in response.headers  # not gzipped, despite the site-wide gzip_types
            assert response.headers.get("x-request-id"), "the gateway's request id must reach the client"

            seen: list[dict] = []
            try:
                async with asyncio.timeout(TIMEOUT):
                    while not any(c["choices"] and c["choices"][0]["delta"].get("content") == "Hello" for c in seen):
                        data = await read_event(response)
                        assert data is not None, f"the stream ended early: {seen}"
                        seen.append(json.loads(data))
            except TimeoutError:
                pytest.fail(f"the first content chunk did not get through nginx within {TIMEOUT} s while the "
                            f"provider held the stream: something buffers it (got {seen})")
            # The provider is still holding the rest back: "Hello" came through on its own.
            assert provider.waiting.is_set() and not provider.gate.is_set()
            assert seen[0]["choices"][0]["delta"]["role"] == "assistant"

            provider.gate.set()
            rest: list[bytes] = []
            async with asyncio.timeout(TIMEOUT):
                while (data := await read_event(response)) is not None:
                    rest.append(data)
    assert rest[-1] == b"[DONE]"
    chunks = [json.loads(d) for d in rest[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == " world"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert len(provider.requests) == 1

    # nginx logs the client's X-Request-Id (it also passes it to the gateway as X-Request-Id).
    access_log = stack.tmp / "nginx" / "gateway.access.log"
    async with asyncio.timeout(TIMEOUT):
        while f"rid={sent_id}" not in (access_log.read_text() if access_log.exists() else ""):
            await asyncio.sleep(0.05)


async def test_non_streaming_through_nginx(stack_factory):
    stack = await stack_factory(nginx_binary())
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        async with session.post(f"{stack.url}/v1/chat/completions", json=request_body(False)) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"].startswith("application/json")
            answer = await response.json()
        async with session.get(f"{stack.url}/v1/models") as response:
            assert response.status == 200
            assert MODEL in [m["id"] for m in (await response.json())["data"]]
    assert answer["object"] == "chat.completion"
    message = answer["choices"][0]["message"]
    assert (message["role"], message["content"]) == ("assistant", "Hello world")
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_body_limit_matches_the_gateway(stack_factory):
    """nginx lets through every body the gateway takes (4 MiB), and refuses larger ones in OpenAI's shape."""
    stack = await stack_factory(nginx_binary())
    empty = len(orjson.dumps(request_body(False, "")))
    at_limit = orjson.dumps(request_body(False, "x" * (MAX_BODY - empty)))
    assert len(at_limit) == MAX_BODY
    over = orjson.dumps(request_body(False, "x" * (MAX_BODY - empty + 1)))
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        async with session.post(f"{stack.url}/v2/chat/completions", data=at_limit, headers=headers) as response:
            assert response.status == 200, await response.text()
        async with session.post(f"{stack.url}/v2/chat/completions", data=over, headers=headers) as response:
            assert response.status == 413
            assert response.headers["Content-Type"].startswith("application/json")
            error = (await response.json())["error"]
    assert error["code"] == "request_too_large" and error["type"] == "invalid_request_error"
    assert len(stack.provider.requests) == 1


async def test_metrics_are_served_on_loopback_only(stack_factory):
    """Prometheus scrapes the gateway's own address; nginx does not hand /metrics to the internet."""
    stack = await stack_factory(nginx_binary())
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        async with session.get(f"{stack.url}/metrics") as response:
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        async with session.get(f"http://127.0.0.1:{stack.gateway_port}/metrics") as response:
            assert response.status == 200
            assert "gateway_requests_total" in await response.text()


@pytest.mark.parametrize("unit", ["gateway.service", "gateway@8080.service"])
def test_systemd_unit_verifies(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify insists that ExecStart exists: point it at a stand-in for the installed venv's script.
    stand_in = tmp_path / "gateway"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    source = (UNITS / unit.replace("8080", "")).read_text()
    assert "/opt/gateway/.venv/bin/gateway serve --config /etc/gateway/providers.yaml" in source
    (tmp_path / unit).write_text(source.replace("/opt/gateway/.venv/bin/gateway", str(stand_in))
                                 .replace("WorkingDirectory=/opt/gateway", f"WorkingDirectory={tmp_path}"))
    result = subprocess.run([analyze, "verify", "--man=no", str(tmp_path / unit)],
                            capture_output=True, text=True, timeout=60)
    # It exits 0 even on unknown keys and bad values, which it only reports: any output is a finding.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), \
        f"systemd-analyze verify {unit}:\n{result.stdout}{result.stderr}"


async def test_sigterm_lets_a_running_stream_finish(stack_factory):
    """`systemctl stop/restart` sends SIGTERM: a stream already running through nginx still ends with [DONE],
    and the gateway then exits 0 (systemd sees a clean stop, not a failure to restart)."""
    stack = await stack_factory(nginx_binary())
    provider = stack.provider
    provider.gate = asyncio.Event()
    gateway = stack.processes[0]
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        async with session.post(f"{stack.url}/v2/chat/completions", json=request_body(True)) as response:
            assert response.status == 200
            while not provider.waiting.is_set():
                assert await read_event(response) is not None
            gateway.send_signal(signal.SIGTERM)
            # New connections are refused at once; the running stream goes on.
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=1):
                        pass
                except OSError:
                    break
                await asyncio.sleep(0.05)
            assert gateway.poll() is None
            provider.gate.set()
            events = []
            while (data := await read_event(response)) is not None:
                events.append(data)
    assert events[-1] == b"[DONE]"
    async with asyncio.timeout(TIMEOUT):
        while gateway.poll() is None:
            await asyncio.sleep(0.05)
    assert gateway.returncode == 0


def test_site_keeps_several_instances_alive():
    """The upstream lists several instances and keeps connections to them open (HTTP/1.1, no Connection: close)."""
    site = re.sub(r"#[^\n]*", "", SITE.read_text())
    upstream = re.search(r"upstream gateway \{(.*?)\}", site, re.S).group(1)
    assert len(re.findall(r"^\s*server\s", upstream, re.M)) >= 2
    assert re.search(r"^\s*keepalive\s+\d+;", upstream, re.M)
    assert re.search(r"^\s*proxy_http_version 1\.1;", site, re.M)
    assert re.search(r'^\s*proxy_set_header Connection "";', site, re.M)
    assert "proxy_intercept_errors on" not in site  # the gateway's own errors reach the client unchanged


async def test_nginx_answers_a_dead_gateway_in_openai_error_shape(stack_factory):
    """No instance answers: the OpenAI SDK shows nginx's message, not a bare "Error code: 502"."""
    import openai

    stack = await stack_factory(nginx_binary())
    gateway = stack.processes[0]
    os.killpg(gateway.pid, signal.SIGKILL)
    gateway.wait(timeout=TIMEOUT)
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        async with session.post(f"{stack.url}/v1/chat/completions", json=request_body(True)) as response:
            assert response.status == 502
            assert response.headers["Content-Type"].startswith("application/json")
            error = (await response.json())["error"]
        async with session.get(f"{stack.url}/v1/models") as response:
            assert response.status == 502
            assert (await response.json())["error"]["code"] == "gateway_unavailable"
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-unused", max_retries=0, timeout=TIMEOUT)
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    finally:
        await client.close()
    assert "not reachable" in str(raised.value), str(raised.value)


async def test_nginx_does_not_expose_the_verbose_health_report(stack_factory):
    stack = await stack_factory(nginx_binary())
    async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT):
        for query in ("?verbose=1", "?verbose", "?x=1&verbose=1"):
            async with session.get(f"{stack.url}/healthz{query}") as response:
                assert response.status == 404, query
                assert response.headers["Content-Type"].startswith("application/json")
                assert "providers" not in await response.text()
        async with session.get(f"{stack.url}/healthz") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with session.get(f"http://127.0.0.1:{stack.gateway_port}/admin/health") as response:
            assert "providers" in await response.json()  # the report: on the gateway's own loopback address
