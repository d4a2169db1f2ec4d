"""Node.js for the tests that run an example under examples/: the node binary, once the example's
node_modules matches its package-lock.json (`npm ci` otherwise)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

STAMP = Path("node_modules") / ".installed-from-lock"  # in the example's folder


def require(binary: str) -> str:
    """CI always has node and npm, so there their absence is a failure, not a skip."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is missing on CI")
        pytest.skip(f"{binary} not installed")
    return path


def installed_node(example: Path) -> str:
    """The node binary, after `npm ci` in `example` unless its node_modules was installed from the same lock."""
    node, npm = require("node"), require("npm")
    lock = hashlib.sha256((example / "package-lock.json").read_bytes()).hexdigest()
    stamp = example / STAMP
    if not stamp.exists() or stamp.read_text() != lock:
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=example, capture_output=True,
                                   text=True, timeout=300)
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
        stamp.write_text(lock)
    return node
