"""SIGTERM with requests still running past the grace: each ends with a clear error, none is just cut."""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import orjson

from tests.fakes.upstream import HANG, FakeUpstream, Reply, chat_chunk, sse
from tests.serving import served
from tests.helpers import BOUND, free_port


async def test_sigterm_past_the_grace_ends_streams_with_an_error_event(aiohttp_server, tmp_path):
    fake = FakeUpstream()
    upstream = await aiohttp_server(fake.app)
    fake.queue(Reply(steps=[sse(chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Hi"}),
                                done=False), HANG]))
    fake.queue(Reply(steps=[sse(chat_chunk({"role": "assistant", "content": ""}), done=False), HANG]))
    port = free_port()
    config = f"""
server: {{host: 127.0.0.1, port: {port}, shutdown_grace: 1, sse_keepalive: 30}}
providers:
  - {{name: up, kind: openai, base_url: "http://127.0.0.1:{upstream.port}/v1", api_key: sk-test-shutdown000000}}
"""
    async with served(config, port, tmp_path) as (gateway, log):
        async with aiohttp.ClientSession() as session, asyncio.timeout(BOUND):
            body = {"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}
            streaming = await session.post(f"http://127.0.0.1:{port}/v2/chat/completions", json={**body, "stream": True})
            assert streaming.status == 200
            first = await streaming.content.readuntil(b"\n\n")
            assert b'"role":"assistant"' in first
            waiting = asyncio.ensure_future(session.post(f"http://127.0.0.1:{port}/v2/chat/completions", json=body))
            while len(fake.received) < 2:
                await asyncio.sleep(0.02)
            gateway.send_signal(signal.SIGTERM)

            rest = await streaming.read()
            events = [e for e in rest.split(b"\n\n") if e]
            error = orjson.loads(events[-2].removeprefix(b"data: "))["error"]
            assert error["code"] == "server_shutting_down"
            assert events[-1] == b"data: [DONE]"

            answer = await waiting
            assert answer.status == 503
            assert (await answer.json())["error"]["code"] == "server_shutting_down"
            while fake.cut_off < 2:  # both upstream connections were closed
                await asyncio.sleep(0.02)
        assert gateway.wait(BOUND) == 0
    assert "shutting down: 2 request(s) in flight" in log.read_text()
