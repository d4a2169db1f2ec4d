"""The upstream connection pool: aiohttp's TCPConnector, opening a plain connection to one address in one step.

aiohttp hands every new connection to aiohappyeyeballs, which makes a Python socket, awaits
`loop.sock_connect` on it and then wraps it with `loop.create_connection(sock=...)`. For a host with one
address and no TLS there is nothing to race, and the loop's own `create_connection(host, port)` (with
uvloop, one call into libuv) does the same work for a third of the CPU: 175 against 55 µs a connection
on loopback, the accept included. A connection storm to a plain-HTTP upstream (vLLM, Ollama, a sidecar)
opens one connection per stream, so this is part of every request's cost there. Hosts with several
addresses, TLS and a local address keep aiohttp's own path.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler


class UpstreamConnector(aiohttp.TCPConnector):
    """aiohttp.TCPConnector whose plain connection to a single address is the loop's create_connection."""

    async def _wrap_create_connection(  # aiohttp's signature, keyword for keyword
        self,
        *args: Any,
        addr_infos: list[Any],
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        address = None if self._local_addr_infos else _one_plain_address(addr_infos, kwargs)
        if address is None:
            return await super()._wrap_create_connection(*args, addr_infos=addr_infos, req=req, timeout=timeout,
                                                         client_error=client_error, **kwargs)
        family, host, port = address
        factory: Callable[[], ResponseHandler] = args[0]  # aiohttp passes its protocol factory alone
        try:
            async with asyncio.timeout(timeout.sock_connect):
                return await self._loop.create_connection(factory, host, port, family=family,
                                                          flags=socket.AI_NUMERICHOST)
        except OSError as exc:
            if exc.errno is None and isinstance(exc, TimeoutError):
                raise  # the connect timeout: aiohttp makes it a ConnectionTimeoutError
            raise client_error(req.connection_key, exc) from exc


def _one_plain_address(addr_infos: list[Any], kwargs: dict[str, Any]) -> tuple[int, str, int] | None:
    """(family, host, port) when there is one address to try, without TLS and without an IPv6 scope."""
    if len(addr_infos) != 1 or kwargs.get("ssl") or kwargs.get("server_hostname"):
        return None
    family, _, _, _, sockaddr = addr_infos[0]
    if family not in (socket.AF_INET, socket.AF_INET6) or (family == socket.AF_INET6 and any(sockaddr[2:])):
        return None
    return family, sockaddr[0], sockaddr[1]
