"""A real nginx in front of the gateway, for the deployment tests: the shipped site rendered for free
ports, nginx started on its own prefix, and small readers of what passes through."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp
import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "deploy" / "nginx" / "gateway.conf"
TIMEOUT = 10.0  # bound on every wait; generous, never reached unless something is wrong


def nginx_binary() -> str:
    """Called in the test bodies, not in a fixture: on CI a missing nginx is a failure, not an error."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found
    message = "nginx is not installed (apt-get install -y nginx): deploy/nginx/gateway.conf cannot be tested"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


INSTANCE_PORTS = (8080, 8081)  # the upstream's servers as shipped


def render_site(template: str, listen_port: int, gateway_ports: int | list[int], log_dir: Path) -> str:
    """deploy/nginx/gateway.conf with the test's ports and paths; each substitution must find its target,
    so that a change to the file cannot make the test quietly check something else."""
    listens = 0

    def listen(match: re.Match) -> str:
        nonlocal listens
        listens += 1
        return f"{match.group(1)}listen 127.0.0.1:{listen_port};\n" if listens == 1 else ""

    site = re.sub(r"(?m)^([ \t]*)listen\s[^;]*;[^\n]*\n", listen, template)
    assert listens >= 1, "no listen directive in gateway.conf"
    ports = [gateway_ports] * len(INSTANCE_PORTS) if isinstance(gateway_ports, int) else gateway_ports
    for shipped, port in zip(INSTANCE_PORTS, ports, strict=True):
        site, servers = re.subn(rf"(?m)^([ \t]*)server\s+127\.0\.0\.1:{shipped}\b", rf"\g<1>server 127.0.0.1:{port}",
                                site)
        assert servers == 1, f"gateway.conf's upstream must list server 127.0.0.1:{shipped} once"
    site = site.replace("/var/log/nginx/", f"{log_dir}/")
    leftover = re.findall(r"(?m)^[^#\n]*\s(/(?:var|etc|run)/\S*)", site)
    assert not leftover, f"gateway.conf refers to system paths the test does not redirect: {leftover}"
    return site


def nginx_conf(prefix: Path, site_file: Path) -> str:
    """The main config around the site, like Debian's nginx.conf, but with every path in `prefix`."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # as root, workers would be nobody: no access here
    temp = "".join(f"    {kind}_temp_path {prefix}/{kind}_temp;\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 256;
}}
http {{
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    # Site-wide compression that includes event streams, as an admin might set: the site must still stream.
    gzip on;
    gzip_types text/event-stream application/json;
{temp}    include {site_file};
}}
"""


def chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": "m1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the process group (nginx's workers included) if it does not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the group holds only what it started
            process.wait(timeout=TIMEOUT)


def log_of(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no log)"


async def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    assert process.poll() is None, f"{process.args[0]} exited with {process.returncode}:\n{log_of(log)}"
                    try:
                        async with session.get(url) as response:
                            if response.status == 200:
                                return
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pytest.fail(f"{url} did not answer within {TIMEOUT} s:\n{log_of(log)}")


async def read_event(response: aiohttp.ClientResponse) -> bytes | None:
    """The next event's data (comments skipped), None at the end of the stream."""
    data: list[bytes] = []
    while True:
        line = await response.content.readline()
        if not line:
            return b"\n".join(data) if data else None
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                return b"\n".join(data)
            continue
        if line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))

