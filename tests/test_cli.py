"""The command line: `gateway check`, `--version`, and `gateway serve` as a real process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from gateway import __version__
from tests.helpers import free_port
from tests.helpers import start_serve as _start, stop_serve as _stop, wait_healthy as _wait_healthy

REPO = Path(__file__).resolve().parents[1]
WAIT = 60  # hang guard for a process that should answer in well under a second


def run_gateway(*args: str, timeout: float = WAIT) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=timeout, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"gateway {' '.join(args)} did not finish (hang guard: {timeout} s)")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SURELY_UNSET_VAR_CLI", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------------------------- check

VALID = """\
server: {host: 127.0.0.1, port: 8081}
providers:
  - {name: demo, kind: demo, models: [echo], token_interval: 0}
  - name: dormant
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${SURELY_UNSET_VAR_CLI}
routes:
  chat: [demo/echo]
"""

INVALID = """\
server:
  port: eighty
providers:
  - name: demo
    kind: demo
    colour: blue
  - name: up
    kind: mystery
routes:
  chat: [ghost/model]
middlewares: [normalize, cache]
"""


def test_check_valid_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text(VALID, encoding="utf-8")
    result = run_gateway("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"{path}: ok (2 providers, 1 routes)" in result.stdout
    assert "SURELY_UNSET_VAR_CLI" in result.stdout  # the disabled provider is noted
    assert "Traceback" not in result.stderr


def test_check_invalid_file_lists_every_problem(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID, encoding="utf-8")
    result = run_gateway("check", "--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    expected = {
        "server.port": 2,
        "providers[0].colour": 6,
        "providers[1].kind": 8,
        "routes.chat[0]": 10,
        "middlewares[1]": 11,
    }
    for key_path, line in expected.items():
        assert any(entry.startswith(f"{path}: line {line}: {key_path}: ") for entry in lines), (key_path, lines)
    assert lines[-1] == f"{path}: {len(expected)} problem(s)"
    assert len(lines) == len(expected) + 1


def test_check_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("providers:\n  - name: demo\n    kind: demo: x\n", encoding="utf-8")
    result = run_gateway("check", "--config", str(path))
    assert result.returncode == 1
    assert re.search(r"line 3: .*YAML", result.stderr), result.stderr


def test_check_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    result = run_gateway("check", "--config", str(path), timeout=20)
    assert result.returncode == 1
    assert "providers" in result.stderr


def test_check_missing_file(tmp_path):
    result = run_gateway("check", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "cannot read" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_default_config():
    result = run_gateway("check")
    assert result.returncode == 0, result.stderr
    assert "ok (" in result.stdout


def test_version():
    result = run_gateway("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gateway {__version__}"


def test_no_command_is_a_usage_error():
    result = run_gateway()
    assert result.returncode == 2
    assert "usage" in result.stderr.lower()


# ---------------------------------------------------------------------------------------------- serve


def _serve_config(host: str, port: int) -> str:
    auth = "" if host == "127.0.0.1" else "auth: none\n"  # keyless off loopback must be written out
    return (f"{auth}server: {{host: '{host}', port: {port}, shutdown_grace: 2}}\n"
            "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0}\n")


async def _stream_chat(url: str) -> bytes:
    body = {"model": "demo/echo", "stream": True, "messages": [{"role": "user", "content": "hi there"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/v1/chat/completions", json=body) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            return await response.read()


async def test_serve_streams_and_stops_cleanly(tmp_path):
    port = free_port()
    path = tmp_path / "serve.yaml"
    path.write_text(_serve_config("127.0.0.1", port), encoding="utf-8")
    process = _start("--config", str(path))
    try:
        url = f"http://127.0.0.1:{port}"
        await _wait_healthy(process, url)
        raw = await _stream_chat(url)
    finally:
        if process.poll() is None:
            code, stderr = _stop(process)
        else:
            code, stderr = process.returncode, process.stderr.read()
    events = [block for block in raw.split(b"\n\n") if block.strip()]
    assert events[-1] == b"data: [DONE]"
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = [orjson.loads(block[len(b"data: "):]) for block in events[:-1]]
    assert chunks and all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "hi there" in text
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert f"listening on http://127.0.0.1:{port}" in stderr


async def test_serve_host_and_port_flags_override_the_config(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    path = tmp_path / "serve.yaml"
    # The config's own address cannot be served: 192.0.2.1 (TEST-NET-1) is not on this host and its
    # port is taken, so the server only comes up if both flags win.
    path.write_text(_serve_config("192.0.2.1", taken), encoding="utf-8")
    port = free_port()
    process = _start("--config", str(path), "--host", "127.0.0.1", "--port", str(port))
    try:
        await _wait_healthy(process, f"http://127.0.0.1:{port}")
    finally:
        blocker.close()
        if process.poll() is None:
            code, stderr = _stop(process)
        else:
            code, stderr = process.returncode, process.stderr.read()
    assert code == 0, stderr
    assert f"listening on http://127.0.0.1:{port}" in stderr


def test_serve_invalid_config_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(INVALID, encoding="utf-8")
    result = run_gateway("serve", "--config", str(path))
    assert result.returncode == 2
    assert "providers[0].colour" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_port_out_of_range_is_one_line_and_exit_2(tmp_path, port):
    path = tmp_path / "serve.yaml"
    path.write_text(_serve_config("127.0.0.1", free_port()), encoding="utf-8")
    result = run_gateway("serve", "--config", str(path), "--port", port)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"gateway serve: --port {port}: must be between 0 and 65535"]


def test_serve_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "serve.yaml"
        path.write_text(_serve_config("127.0.0.1", port), encoding="utf-8")
        result = run_gateway("serve", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"gateway serve: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_serve_host_not_on_this_machine_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "serve.yaml"
    keyed = (f"server: {{host: 192.0.2.1, port: {free_port()}}}\n"  # TEST-NET-1: on no host
             "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0}\n"
             f"keys:\n  - {{id: k, sha256: {'ab' * 32}}}\n")
    path.write_text(keyed, encoding="utf-8")
    result = run_gateway("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gateway serve: cannot listen on 192.0.2.1:"), result.stderr


@pytest.mark.parametrize("host", ["bad host", "999.1.1.1", "-x", "exa mple.com"])
def test_cli_host_is_validated_like_the_config_s(tmp_path, host):
    path = tmp_path / "serve.yaml"
    path.write_text(_serve_config("127.0.0.1", free_port()), encoding="utf-8")
    result = run_gateway("serve", "--config", str(path), f"--host={host}")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--host" in result.stderr and "IP address" in result.stderr
    path.write_text(_serve_config(host, free_port()), encoding="utf-8")  # the same words for server.host
    result = run_gateway("check", "--config", str(path))
    assert result.returncode == 1 and "server.host: must be an IP address" in result.stderr


@pytest.mark.parametrize("host", ["::1", "[::1]"])
async def test_ipv6_host_is_printed_as_a_url(tmp_path, host):
    port = free_port()
    path = tmp_path / "serve.yaml"
    path.write_text(_serve_config("127.0.0.1", port), encoding="utf-8")
    process = _start("--config", str(path), "--host", host, "--port", str(port))
    try:
        await _wait_healthy(process, f"http://[::1]:{port}")
    finally:
        code, stderr = _stop(process) if process.poll() is None else (process.returncode, process.stderr.read())
    assert code == 0, stderr
    assert f"listening on http://[::1]:{port}" in stderr


def test_serve_log_level_flag_overrides_the_config_s_logging_level(tmp_path):
    path = tmp_path / "serve.yaml"
    with socket.socket() as taken:  # the serve fails at once: what matters is which lines it logged first
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = (_serve_config("127.0.0.1", taken.getsockname()[1])
                  + "  - {name: dormant, kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key: '${SURELY_UNSET_VAR_CLI}'}\n"
                  + "logging: {level: ERROR, format: json}\n")
        path.write_text(config, encoding="utf-8")
        quiet = run_gateway("serve", "--config", str(path))
        loud = run_gateway("serve", "--config", str(path), "--log-level", "warning")
    assert "disabled" not in quiet.stderr
    warning = next(line for line in loud.stderr.splitlines() if "disabled" in line)
    assert orjson.loads(warning)["level"] == "WARNING"


# ----------------------------------------------------------------------- start-up failures, ${VAR}

def test_serve_missing_config_is_one_line_and_exit_2(tmp_path):
    result = run_gateway("serve", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "absent.yaml")), lines
    assert lines[0].endswith("cannot read: No such file or directory") and "Traceback" not in result.stderr


def test_serve_config_that_is_not_utf8_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"providers:\n  - {name: d\xe9mo, kind: demo}\n")
    result = run_gateway("serve", "--config", str(path))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "not UTF-8" in result.stderr, result.stderr


def test_serve_config_that_is_a_directory_is_one_line_and_exit_2(tmp_path):
    result = run_gateway("serve", "--config", str(tmp_path))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "cannot read" in result.stderr, result.stderr


async def test_serve_port_from_an_environment_variable(tmp_path):
    port = free_port()
    path = tmp_path / "serve.yaml"
    path.write_text("server:\n  port: ${GATEWAY_TEST_PORT}\n  shutdown_grace: 2\n"
                    "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0}\n", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path)], cwd=REPO,
                               env={**_env(), "GATEWAY_TEST_PORT": str(port)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        await _wait_healthy(process, f"http://127.0.0.1:{port}")
    finally:
        code, stderr = _stop(process) if process.poll() is None else (process.returncode, process.stderr.read())
    assert code == 0, stderr


def test_unset_variable_in_a_scalar_field_is_named_in_the_problem(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("server: {port: '${SURELY_UNSET_VAR_CLI}'}\n"
                    "providers:\n  - {name: demo, kind: demo, models: [echo]}\n", encoding="utf-8")
    result = run_gateway("check", "--config", str(path))
    assert result.returncode == 1
    assert f"{path}: line 1: server.port: SURELY_UNSET_VAR_CLI is not set" in result.stderr.splitlines()
