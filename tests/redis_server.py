"""A redis-server of the test's own on a free loopback port, and the fixtures that start one; the limits
config the Redis tests share."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.helpers import BOUND, digest, free_port

SOLO = "gwk-solo-0123456789abcdef"
RATED = "gwk-rated-0123456789abcdef"


def keys_yaml(url: str, on_error: str = "open") -> str:
    """Two keys on a Redis limits backend: `solo` may hold one stream, `rated` 3 requests a minute."""
    return f"""
keys:
  - {{id: solo, sha256: {digest(SOLO)}, limits: {{concurrent_streams: 1}}}}
  - {{id: rated, sha256: {digest(RATED)}, limits: {{requests_per_minute: 3, tokens_per_minute: 100000}}}}
limits: {{backend: redis, url: "{url}", on_backend_error: {on_error}}}
"""



def redis_binary() -> str:
    found = shutil.which("redis-server") or next(
        (path for path in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.path.exists(path)), None)
    if found is None:
        message = "redis-server is missing (tests/run.sh installs it: apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


class RedisServer:
    """A redis-server of its own on a free loopback port, nothing saved to disk."""

    def __init__(self, directory: Path) -> None:
        self.binary = redis_binary()
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = aioredis.from_url(self.url)
        try:
            async with asyncio.timeout(BOUND):
                while True:
                    assert self.process.poll() is None, "redis-server exited at start"
                    try:
                        await client.ping()
                        return
                    except aioredis.ConnectionError:
                        await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(BOUND)


@pytest.fixture
async def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    await server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    return redis_server.url


@pytest.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


