"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium driven by Playwright for Python.

No browser is downloaded (`playwright install` is never run): Playwright launches the system binary.
CI always has it (tests/run.sh installs it), so there a missing browser fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying hosts this machine cannot reach.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOUND_MS = 10_000  # a bound on each wait in the page, so that a broken page fails instead of hanging


def require(what: str, found: bool) -> None:
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} is missing on CI")
        pytest.skip(f"{what} not installed")


def require_chromium() -> str:
    require(str(CHROMIUM), CHROMIUM.exists() or shutil.which("chromium") is not None)
    return str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))


@contextlib.asynccontextmanager
async def serving(app: web.Application, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Serves `app` on a free loopback port, as `gateway serve` does (a client that leaves cancels its
    handler); yields its base URL."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def static_app(folder: Path, index: str = "index.html") -> web.Application:
    """A plain static server for a page on another origin than the gateway's."""
    app = web.Application()

    async def root(_: web.Request) -> web.FileResponse:
        return web.FileResponse(folder / index)

    app.router.add_get("/", root)
    app.router.add_static("/", folder)
    return app


REACT_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "react"


def build_react_example(out: Path) -> Path:
    """examples/react built with its one command (npm ci once per lockfile, then `npm run build`) into `out`."""
    import hashlib
    import subprocess

    npm = shutil.which("npm")
    require("npm", npm is not None and shutil.which("node") is not None)
    stamp = REACT_EXAMPLE / "node_modules" / ".installed-from-lock"
    lock = hashlib.sha256((REACT_EXAMPLE / "package-lock.json").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != lock:
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=REACT_EXAMPLE, capture_output=True,
                                   text=True, timeout=300)
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
        stamp.write_text(lock)
    built = subprocess.run([npm, "run", "build", "--", "--outDir", str(out), "--emptyOutDir"], cwd=REACT_EXAMPLE,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"vite build failed:\n{built.stdout}\n{built.stderr}"
    return out
