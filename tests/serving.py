"""`gateway serve` as a child process, for tests that need a real server (signals, shutdown)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import BOUND

ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def served(config: str, port: int, tmp_path: Path,
                 *args: str) -> AsyncIterator[tuple[subprocess.Popen, Path]]:
    """Runs `gateway serve` on `config` (which listens on `port`), with `args` on its command line, until it
    answers /healthz; yields the process and its log. The process is killed on the way out if the test did
    not end it."""
    path = tmp_path / "providers.yaml"
    path.write_text(config)
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        gateway = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), *args],
                                   cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(BOUND):
            while True:
                if gateway.poll() is not None:
                    pytest.fail(f"gateway serve exited with {gateway.returncode}:\n{log.read_text()}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        yield gateway, log
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait()

