"""Watching an upstream stream's connection: the read timeouts (one timer per stream) and a connection
that closes under a body that has not ended (gateway/upstream.py reads the stream)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

from .config import ProviderConfig, Timeouts
from .errors import GatewayError, upstream_bad_stream, upstream_reset
from .redaction import redact


class Expired(Exception):
    """A stream timeout fired: `which` of first_byte, idle, silence, total."""

    def __init__(self, which: str) -> None:
        self.which = which


class ReadWatchdog:
    """One timer per stream for the idle, first-byte, silence and total timeouts.

    Reads only record the time (the hot path); the timer re-arms itself lazily, and on expiry
    fails the pending read and closes the connection, whichever task is waiting on it. While
    `waiting_on_client` is set (the stream is suspended at its yield, the consumer busy, usually
    writing to a slow client) the provider is not read, so neither idle nor silence can expire.
    """

    __slots__ = ("_loop", "_response", "_first_byte", "_idle", "_max_silence", "_deadline", "last_read",
                 "last_event", "got_data", "waiting_on_client", "_handle")

    def __init__(self, response: aiohttp.ClientResponse, timeouts: Timeouts, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._first_byte = timeouts.first_byte
        self._idle = timeouts.idle
        self._max_silence = timeouts.max_silence
        self._deadline = deadline
        self.last_read = self.last_event = self._loop.time()
        self.got_data = False
        self.waiting_on_client = False
        self._handle = self._loop.call_at(self._next_check(self.last_read), self._check)

    def _next_check(self, now: float) -> float:
        if self.got_data:
            read_limit = self.last_read + self._idle
        else:  # also at the idle limit's time, if sooner: then the first data needs no new timer
            read_limit = self.last_read + self._first_byte
            idle_at = self.last_read + self._idle
            if now < idle_at < read_limit:
                read_limit = idle_at
        return min(read_limit, self.last_event + self._max_silence, self._deadline)

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            return self._expire("total")
        if self.waiting_on_client:  # time spent on the client is not the provider's
            self._handle = self._loop.call_at(min(now + min(self._idle, self._max_silence), self._deadline),
                                              self._check)
            return
        if now >= self.last_read + (self._idle if self.got_data else self._first_byte):
            return self._expire("idle" if self.got_data else "first_byte")
        if now >= self.last_event + self._max_silence:
            return self._expire("silence")
        self._handle = self._loop.call_at(self._next_check(now), self._check)

    def first_data(self) -> None:
        """The body began: from now on the idle timeout applies, which may be shorter than first_byte. The
        check already due (no later than the idle limit's time from the start, usually) stays."""
        self.got_data = True
        if self._handle.when() > self.last_read + self._idle:  # the body began after that time
            self._handle.cancel()
            self._handle = self._loop.call_at(self._next_check(self.last_read), self._check)

    def _expire(self, which: str) -> None:
        self._response.content.set_exception(Expired(which))
        self._response.close()

    def cancel(self) -> None:
        self._handle.cancel()


def framing_reason(provider: ProviderConfig, error: HttpProcessingError) -> str:
    """aiohttp's parser message, which may quote the provider's bytes: redacted and short."""
    return redact(str(error.message or type(error).__name__), provider.secrets)[:120]


def broken_connection(provider: ProviderConfig, protocol: ResponseHandler | None) -> GatewayError:
    """The connection closed under a body that had not ended: broken framing, or a plain reset."""
    cause = protocol.exception() if protocol is not None else None
    if isinstance(cause, HttpProcessingError):
        return upstream_bad_stream(provider.name, f"invalid HTTP framing ({framing_reason(provider, cause)})")
    return upstream_reset(provider.name)


class ConnectionWatch:
    """Fails the pending body read when the connection closes under a body that has not ended.

    aiohttp closes the connection on a framing error (a bad chunk size line) without waking the
    body's reader, which then waits for a timeout, or later gets a bare RuntimeError. One watch per
    connection, kept across its reuses from the pool, so that its closed future gets one callback.
    """

    __slots__ = ("_protocol", "content", "provider")

    def __init__(self, protocol: ResponseHandler, closed: asyncio.Future[Any]) -> None:
        self._protocol = weakref.ref(protocol)  # weak: _WATCHES must not keep its own key alive
        self.content: aiohttp.StreamReader | None = None  # the body being read on it now
        self.provider: ProviderConfig | None = None
        closed.add_done_callback(self._on_closed)

    @property
    def protocol(self) -> ResponseHandler | None:
        return self._protocol()

    def _on_closed(self, closed: asyncio.Future[Any]) -> None:
        if not closed.cancelled():
            closed.exception()  # retrieved: a pooled connection that dies is no error of anyone's
        content = self.content
        if content is not None and not content.is_eof() and content.exception() is None:
            assert self.provider is not None  # set with content
            content.set_exception(broken_connection(self.provider, self.protocol))


_WATCHES: weakref.WeakKeyDictionary[ResponseHandler, ConnectionWatch] = weakref.WeakKeyDictionary()


def watch(response: aiohttp.ClientResponse, provider: ProviderConfig) -> ConnectionWatch | None:
    connection = response.connection  # None when the whole body came with the headers
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return None
    watch = _WATCHES.get(protocol)
    if watch is None:
        closed = protocol.closed
        if closed is None:  # already lost: the body's reader has been told
            return None
        watch = _WATCHES[protocol] = ConnectionWatch(protocol, closed)
    watch.content, watch.provider = response.content, provider
    return watch
