"""gateway/connector.py against real sockets: the one-step connection to a single plain address is taken
(uvloop's refusal reads "Connection refused", aiohappyeyeballs' "Connect call failed ..."), pools and
reuses its connections, maps refusals and connect timeouts as aiohttp's own path does, and leaves hosts
with several addresses to happy eyeballs."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import uvloop
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.connector import UpstreamConnector
from tests.helpers import BOUND, free_port



async def _served(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def _peers_seen(requests: int, **options: Any) -> set[Any]:
    """The client addresses a server saw over `requests` sequential requests through one UpstreamConnector."""
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text="ok")

    runner, port = await _served(handler)
    try:
        async with aiohttp.ClientSession(connector=UpstreamConnector(**options)) as session, asyncio.timeout(BOUND):
            for _ in range(requests):
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert await response.text() == "ok"
    finally:
        await runner.cleanup()
    return peers


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_one_connection_serves_sequential_requests(loop_factory):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert len(runner.run(_peers_seen(5))) == 1
        assert len(runner.run(_peers_seen(3, force_close=True))) == 3


async def _refusal(connector_class: type[aiohttp.TCPConnector]) -> aiohttp.ClientConnectorError:
    port = free_port()  # nothing listens there
    async with aiohttp.ClientSession(connector=connector_class()) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.get(f"http://127.0.0.1:{port}/")
    return caught.value


def test_a_refusal_is_the_same_client_error_through_the_one_step_path():
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        ours = runner.run(_refusal(UpstreamConnector))
        aiohttps = runner.run(_refusal(aiohttp.TCPConnector))
    assert ours.os_error.errno == aiohttps.os_error.errno == errno.ECONNREFUSED
    assert ours.host == aiohttps.host == "127.0.0.1" and ours.ssl == aiohttps.ssl
    # the path taken: uvloop's own connect words it so, aiohappyeyeballs names the address
    assert ours.os_error.strerror == "Connection refused"
    assert aiohttps.os_error.strerror.startswith("Connect call failed")


async def test_a_connect_that_never_completes_is_a_connection_timeout():
    # A listener whose accept queue is full and never drained: the kernel drops further SYNs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):  # fills the queue (its length is backlog + 1, or more on some kernels)
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=0.3)
            async with aiohttp.ClientSession(connector=UpstreamConnector(), timeout=timeout) as session:
                with pytest.raises(aiohttp.ConnectionTimeoutError):
                    async with asyncio.timeout(BOUND):
                        await session.get(f"http://127.0.0.1:{port}/")
        finally:
            for filler in fillers:
                filler.close()


class _TwoAddresses(AbstractResolver):
    """Resolves every host to 127.0.0.2 (nothing listens there) and then 127.0.0.1."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST) for address in ("127.0.0.2", "127.0.0.1")]

    async def close(self) -> None:
        pass


async def test_a_host_with_several_addresses_falls_back_to_the_next_one():
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="reached")

    runner, port = await _served(handler)
    try:
        connector = UpstreamConnector(resolver=_TwoAddresses())
        async with aiohttp.ClientSession(connector=connector) as session, asyncio.timeout(BOUND):
            async with session.get(f"http://upstream.test:{port}/") as response:
                assert await response.text() == "reached"
    finally:
        await runner.cleanup()
