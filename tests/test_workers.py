"""`gateway serve --workers 2` as a real process tree: both workers serve on one port, a killed worker is
replaced, /metrics adds up every worker's requests, SIGTERM ends all with exit 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway.supervisor import RestartPolicy
from tests.helpers import free_port
from tests.serving import BOUND

ROOT = Path(__file__).resolve().parents[1]
DEMO = "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0}\n"


def _start(tmp_path: Path, config: str, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, Path]:
    path = tmp_path / "providers.yaml"
    path.write_text(config)
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), *args],
                                   cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, log


async def _answer(session: aiohttp.ClientSession, url: str) -> tuple[int, int] | None:
    """The pid of the worker that answered and its config generation, from the admin view (loopback):
    None while none listens."""
    try:
        async with session.get(f"{url}/admin/health") as response:
            body = await response.json()
            return body["runtime"]["pid"], body["config"]["generation"]
    except aiohttp.ClientError:
        return None


async def _pids_seen(url: str, want: int, generation: int = 1) -> set[int]:
    """Asks on fresh connections (the kernel spreads them over the workers) until `want` pids answered
    on config `generation`."""
    seen: set[int] = set()
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(BOUND * 3):
        while len(seen) < want:
            answer = await _answer(session, url)
            if answer is None:
                await asyncio.sleep(0.05)
            elif answer[1] == generation:
                seen.add(answer[0])
    return seen


async def _chat(session: aiohttp.ClientSession, url: str) -> None:
    body = {"model": "demo/echo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        assert response.status == 200
        assert (await response.read()).endswith(b"data: [DONE]\n\n")


def _chat_requests(metrics: str) -> float:
    return sum(float(value) for value in re.findall(
        r'^gateway_requests_total\{endpoint="chat"[^}]*status="200"[^}]*\} (\S+)$', metrics, re.M))


async def _counted(session: aiohttp.ClientSession, url: str, chats: int) -> str:
    """/metrics once it counts `chats` chat requests: a worker counts a request just after its last byte
    left, so the client may be faster than the count (and a worker killed then would lose it)."""
    async with asyncio.timeout(BOUND):
        while True:
            async with session.get(f"{url}/metrics") as response:
                metrics = await response.text()
            if _chat_requests(metrics) >= chats:
                return metrics
            await asyncio.sleep(0.05)


async def test_two_workers_serve_one_port_a_killed_one_is_replaced_and_sigterm_ends_all(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process, log = _start(tmp_path, f"server: {{port: {port}, shutdown_grace: 3}}\n{DEMO}", "--workers", "2")
    try:
        first = await _pids_seen(url, 2)  # two distinct workers answered
        chats = 0
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(10):
                await _chat(session, url)
                chats += 1
            await _counted(session, url, chats)  # each worker has counted its own before one dies
            killed = min(first)
            os.kill(killed, signal.SIGKILL)
            survivors = await _pids_seen(url, 2)
            assert killed not in survivors and len(survivors - first) == 1  # a new worker took its place
            for _ in range(4):
                await _chat(session, url)
                chats += 1
            metrics = await _counted(session, url, chats)
        (tmp_path / "providers.yaml").write_text(f"server: {{port: {port}, shutdown_grace: 3}}\n{DEMO}"
                                                 "routes:\n  fresh: [demo/echo]\nlogging: {format: json}\n")
        process.send_signal(signal.SIGHUP)  # the supervisor passes it on: each worker reloads, and its logging too
        assert await _pids_seen(url, 2, generation=2) == survivors
        assert _chat_requests(metrics) == chats  # every worker's, the dead one's included
        environ = Path(f"/proc/{max(survivors)}/environ").read_bytes().split(b"\0")
        metrics_dir = next(Path(item.partition(b"=")[2].decode()) for item in environ
                           if item.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
        assert metrics_dir.is_dir()
        process.send_signal(signal.SIGTERM)
        assert process.wait(BOUND) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    for pid in survivors:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    text = log.read_text()
    assert f"worker {killed} exited with signal SIGKILL: starting another" in text
    assert "Traceback" not in text
    stopping = [orjson.loads(line) for line in text.splitlines() if "stopping 2 worker(s)" in line]
    assert [(line["logger"], line["level"]) for line in stopping] == [("gateway.supervisor", "INFO")]  # in JSON
    assert not metrics_dir.exists()  # the supervisor cleans up its multiprocess directory


def test_workers_refuse_the_memory_limits_backend(tmp_path):
    keys = ("middlewares: [normalize, ratelimit]\nkeys:\n"
            "  - {id: k, sha256: " + "ab" * 32 + ", limits: {requests_per_minute: 5}}\n")
    process, log = _start(tmp_path, f"server: {{port: {free_port()}}}\n{DEMO}{keys}", "--workers", "2")
    assert process.wait(BOUND) == 2
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and "limits.backend memory" in lines[0] and "redis" in lines[0], lines


def test_workers_on_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, log = _start(tmp_path, f"server: {{port: {port}}}\n{DEMO}", "--workers", "2")
        assert process.wait(BOUND) == 2
    assert log.read_text().splitlines() == [f"gateway serve: cannot listen on 127.0.0.1:{port}: Address already in use"]


def _workers_die_at_start(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python ends every `gateway serve --worker` before it starts (the supervisor lives)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if '--worker' in sys.argv:\n"
        "    print('this worker cannot start', file=sys.stderr, flush=True)\n"
        "    os._exit(3)\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}


def test_workers_that_cannot_start_are_restarted_with_backoff_then_given_up_on(tmp_path):
    process, log = _start(tmp_path, f"server: {{port: {free_port()}}}\n{DEMO}", "--workers", "2",
                          env=_workers_die_at_start(tmp_path))
    try:
        assert process.wait(BOUND * 3) == 1, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text()
    pauses = re.findall(r"worker \d+ exited with code 3: starting another in (\S+) s$", text, re.M)
    assert pauses == ["0.25", "0.5", "1", "2", "4"]  # doubled after each fast failure, capped
    giving_up = [line for line in text.splitlines() if "giving up" in line]
    assert len(giving_up) == 1 and "6 workers in a row died within 5 s of their start" in giving_up[0]
    assert text.count("this worker cannot start") == 6
    assert "Traceback" not in text


def test_a_worker_that_ran_a_while_resets_the_count_of_fast_failures():
    policy = RestartPolicy(fast_failure=5, first_pause=0.25, max_pause=1, give_up_after=4)
    assert [policy.died(0.1) for _ in range(3)] == [0.25, 0.5, 1]
    assert policy.died(60) == 0  # it ran a while: replaced at once, and the count starts again
    assert [policy.died(0.1) for _ in range(3)] == [0.25, 0.5, 1]
    policy.stayed_up(4.9)  # a replacement not yet up for long: still counting
    assert policy.died(0.1) is None  # the fourth fast failure in a row: give up


def test_a_replacement_that_stays_up_resets_the_count_of_fast_failures():
    policy = RestartPolicy(fast_failure=5, first_pause=0.25, max_pause=1, give_up_after=2)
    assert policy.died(0.1) == 0.25
    policy.stayed_up(5)
    assert policy.died(0.1) == 0.25  # a first fast failure again, not the second
