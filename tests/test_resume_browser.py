"""A resumable stream read by EventSource in headless Chromium (examples/browser/resume.html): a TCP proxy
between the browser and the gateway cuts the connection mid-stream, EventSource reconnects by itself with
Last-Event-ID, and the page shows the whole text exactly once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
import pytest_asyncio

from gateway.app import create_app
from gateway.config import parse_config
from tests.browser import BOUND_MS, CHROMIUM_ARGS, require, require_chromium, serving, static_app
from tests.fakes.upstream import FakeUpstream, Reply, Wait, chat_chunk, sse
from tests.helpers import BOUND, ROLE, bearer, digest

pytestmark = pytest.mark.asyncio(loop_scope="session")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "browser"
KEY = "gwk-resume-browser-0123456789abcdef"
BEFORE = ("Streams", " survive")
AFTER = (" a", " dropped", " connection", " now.")


class CuttableProxy:
    """A TCP proxy on loopback to `port`: `cut()` aborts every connection through it, both sides, as a
    network failure would; it keeps what the browser sent, to show the reconnect's headers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = bytearray()
        self._transports: list[asyncio.WriteTransport] = []
        self.connections = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            self.cut()
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._transports += [writer.transport, up_writer.transport]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, keep: bool) -> None:
            try:
                while data := await source.read(65536):
                    if keep:
                        self.sent += data
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def cut(self) -> None:
        for transport in self._transports:
            transport.abort()
        self._transports.clear()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium():
    executable = require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        require("playwright for Python (pip install -e '.[test]')", False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


def gateway_config(upstream_url: str, origin: str) -> str:
    return f"""server: {{sse_keepalive: 15, cors: {{origins: ['{origin}']}}}}
providers:
  - name: up
    kind: openai
    base_url: {upstream_url}/v1
    api_key: sk-test-0123456789
    models: [gpt-4o-mini]
    timeouts: {{connect: 2, first_byte: 5, idle: 30, total: 60}}
    retry: {{attempts: 1}}
    health: {{max_failures: 0}}
keys:
  - {{id: browser, sha256: {digest(KEY)}}}
resume: {{grace: 20}}
"""


async def test_eventsource_reconnects_by_itself_and_shows_the_whole_text_once(chromium):
    fake = FakeUpstream()
    gate = asyncio.Event()
    fake.queue(Reply(steps=[sse(ROLE, *(chat_chunk({"content": t}) for t in BEFORE), done=False), Wait(gate),
                            sse(*(chat_chunk({"content": t}) for t in AFTER), chat_chunk({}, "stop"))]))
    context = await chromium.new_context()
    page = await context.new_page()
    page.set_default_timeout(BOUND_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        async with serving(fake.app) as upstream_url, serving(static_app(EXAMPLE, "resume.html")) as page_url:
            fake.url = upstream_url
            app = create_app(parse_config(gateway_config(upstream_url, page_url), "test.yaml"))
            async with serving(app) as gateway_url:
                proxy = CuttableProxy(int(gateway_url.rsplit(":", 1)[1]))
                async with proxy.running() as proxied, aiohttp.ClientSession() as session:
                    # The app that started the stream went away (a page reload, say): the page resumes it.
                    async with session.post(f"{gateway_url}/v1/chat/completions", headers=bearer(KEY), json={
                            "model": "up/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}],
                            "stream_options": {"resumable": True}}) as started:
                        assert started.status == 200
                        stream_id, token = started.headers["X-Stream-Id"], started.headers["X-Stream-Token"]
                    query = urlencode({"gateway": proxied, "stream": stream_id, "token": token})
                    await page.goto(f"{page_url}/resume.html?{query}")
                    await page.wait_for_function("() => document.getElementById('answer').textContent === "
                                                 f"{''.join(BEFORE)!r}")
                    proxy.cut()  # the network fails under the page
                    await page.wait_for_function("() => document.body.dataset.reconnects !== '0'")
                    gate.set()
                    await page.wait_for_function("() => document.body.dataset.state === 'done'")
                    assert await page.text_content("#answer") == "".join(BEFORE + AFTER)
                    assert proxy.connections >= 2
                    assert f"last-event-id: {stream_id}.".lower().encode() in bytes(proxy.sent).lower()
                    async with asyncio.timeout(BOUND):
                        while fake.active:
                            await asyncio.sleep(0.02)
                    assert fake.completed == 1 and fake.cut_off == 0
    finally:
        await context.close()
    assert problems == []
