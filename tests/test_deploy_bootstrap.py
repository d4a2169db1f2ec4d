"""deploy/bootstrap.sh: the service's venv is built from the system interpreter, whatever python3 comes first on
PATH (a pyenv shim under /root, which the service user cannot run)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def checkout(tmp_path: Path) -> Path:
    """A copy of the script with a PATH whose python3 records each call and fails."""
    if not SYSTEM_PYTHON.exists() or subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"]).returncode:
        pytest.skip("/usr/bin/python3 with venv is not installed")
    repo = tmp_path / "repo"
    (repo / "deploy").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "bootstrap.sh", repo / "deploy" / "bootstrap.sh")
    stubs = tmp_path / "home-python" / "bin"
    stubs.mkdir(parents=True)
    stub = stubs / "python3"
    stub.write_text(f"#!/bin/sh\necho called >> {tmp_path}/stub-calls\nexit 1\n")
    stub.chmod(0o755)
    return repo


def run(repo: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    # pip has no index here: the install step fails fast, after the venv is made (what this test checks)
    env = {**os.environ, "PATH": f"{tmp_path}/home-python/bin:/usr/bin:/bin", "PIP_NO_INDEX": "1"}
    return subprocess.run(["sh", str(repo / "deploy" / "bootstrap.sh"), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_bootstrap_builds_the_service_venv_from_the_system_interpreter(tmp_path):
    repo = checkout(tmp_path)
    run(repo, tmp_path, "--system")
    assert not (tmp_path / "stub-calls").exists(), "bootstrap.sh --system ran the python3 first on PATH"
    config = (repo / ".venv" / "pyvenv.cfg").read_text()
    assert "home = /usr/bin" in config.splitlines(), config


def test_bootstrap_system_rebuilds_a_venv_made_by_another_interpreter(tmp_path):
    repo = checkout(tmp_path)
    (repo / ".venv" / "bin").mkdir(parents=True)
    old = repo / ".venv" / "bin" / "python"  # what a root-owned pyenv venv looks like to the script
    old.write_text("#!/bin/sh\nexit 0\n")
    old.chmod(0o755)
    (repo / ".venv" / "pyvenv.cfg").write_text("home = /root/.pyenv/versions/3.11.9/bin\n")
    result = run(repo, tmp_path, "--system")
    assert "rebuilding .venv" in result.stderr
    assert "home = /usr/bin" in (repo / ".venv" / "pyvenv.cfg").read_text().splitlines(), result.stderr


def test_bootstrap_quick_start_still_uses_the_python3_on_path(tmp_path):
    """README's `sh deploy/bootstrap.sh` is unchanged: a developer's own python3."""
    repo = checkout(tmp_path)
    result = run(repo, tmp_path)
    assert result.returncode != 0 and (tmp_path / "stub-calls").exists()
