"""Opening a provider's stream: the HTTP request, its timeouts, HTTP error mapping, and event decoding
(with the adapter's decoder: SSE for every format so far).

Every way out of `upstream_events` (end, error, timeout, cancellation, the consumer closing it) leaves the
upstream connection either fully read and pooled, or closed at once; after the provider's end-of-stream
event, pooled when its body ends, or closed if it does not end within END_GRACE.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from aiohttp.client_proto import ResponseHandler
from aiohttp.http_exceptions import HttpProcessingError

from .config import ProviderConfig, Timeouts
from .errors import (
    GatewayError,
    upstream_auth_failed,
    upstream_bad_request,
    upstream_bad_stream,
    upstream_failed,
    upstream_not_found,
    upstream_rate_limited,
    upstream_redirect,
    upstream_reset,
    upstream_silence_timeout,
    upstream_stream_error,
    upstream_timeout,
    upstream_unreachable,
)
from .redaction import redact
from .sse import SSEDecodeError

if TYPE_CHECKING:  # base.py imports this module
    from .providers.base import AdapterState

ERROR_BODY_LIMIT = 64 * 1024
PASSED_HEADERS = ("retry-after", "retry-after-ms")
_MESSAGE_LIMIT = 500
END_GRACE = 1.0  # seconds a connection may take to end its body after the provider's end-of-stream event


@dataclass
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class Ending(Protocol):
    done: bool  # the provider sent its end-of-stream event


class FramingError(ValueError):
    """Bytes that break an event framing other than SSE's (whose decoder raises SSEDecodeError)."""


class Decoder(Protocol):
    def feed(self, data: bytes) -> Sequence[Any]: ...


# An adapter's own reading of an error answer: None leaves it to `http_error`.
ErrorHook = Callable[[ProviderConfig, int, bytes, Mapping[str, str]], GatewayError | None]


class _Expired(Exception):
    def __init__(self, which: str) -> None:
        self.which = which


class _ReadWatchdog:
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
        self._handle = self._loop.call_at(self._next_check(), self._check)

    def _next_check(self) -> float:
        read_limit = self.last_read + (self._idle if self.got_data else self._first_byte)
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
        self._handle = self._loop.call_at(self._next_check(), self._check)

    def first_data(self) -> None:
        """The body began: from now on the idle timeout applies, which may be shorter than first_byte."""
        self.got_data = True
        self._handle.cancel()
        self._handle = self._loop.call_at(self._next_check(), self._check)

    def _expire(self, which: str) -> None:
        self._response.content.set_exception(_Expired(which))
        self._response.close()

    def cancel(self) -> None:
        self._handle.cancel()


def error_payload(body: bytes) -> dict[str, Any] | None:
    """A provider's error body as a JSON object, unwrapping the one-element array some send (Gemini)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    return payload if isinstance(payload, dict) else None


def error_message(body: bytes) -> str | None:
    """The human message in a provider's error body, whichever of the usual shapes it has."""
    payload = error_payload(body)
    if payload is None:
        return None
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail", "msg"):
            if isinstance(text := error.get(key), str):
                return text
    if isinstance(detail := payload.get("detail"), str):
        return detail
    return None


def _shown(provider: ProviderConfig, message: str | None) -> str:
    if not message:
        return ""
    message = redact(message, provider.secrets)
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "..."
    return message


def http_error(provider: ProviderConfig, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError:
    """Maps a provider's HTTP error: 400, 404 and 429 keep their status; a refused key and 5xx become 502."""
    message = _shown(provider, error_message(body))
    passed = {k: v for k, v in headers.items() if k.lower() in PASSED_HEADERS or k.lower().startswith("x-ratelimit-")}
    name = provider.name
    if status == 429:
        return upstream_rate_limited(name, message or "too many requests", passed)
    if status in (401, 403):
        variables = " or ".join(provider.key_vars) or "its api_key"
        return upstream_auth_failed(name, status, variables)
    if status == 404:
        return upstream_not_found(name, message or "no such model or path")
    if status == 408:
        return upstream_timeout(name, "provider")
    if 400 <= status < 500:
        return upstream_bad_request(name, message or f"HTTP {status}")
    detail = f": {message}" if message else ""
    return upstream_failed(name, status, detail, passed)


def stream_error(provider: ProviderConfig, payload: object) -> GatewayError:
    """An error a provider sent inside a 200 stream (`event: error`, or an `{"error": ...}` chunk)."""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    status = None
    if isinstance(error, dict):
        status = error.get("status_code") or error.get("code")
    message = error_message(orjson.dumps(payload)) or "unknown error"
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 600:
        shown = f"provider '{provider.name}' sent an error in its stream: {_shown(provider, message)}"
        return http_error(provider, status, b"", {}).with_message(shown)  # the same status rules as an HTTP error
    return upstream_stream_error(provider.name, _shown(provider, message))


def event_json(data: bytes, state: AdapterState) -> object:
    """An event's JSON value; None, counted on `state.malformed`, when it is not JSON or is null.

    Text that is not valid UTF-8 is decoded with U+FFFD in place of the bad bytes, as SSE decoding
    does, and counted as malformed too: the answer keeps its text (and `on_malformed: error` fails
    the try), where dropping the event would make a silent, empty success.
    """
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = _repaired(data)
        state.malformed += 1
        return payload
    if payload is None:
        state.malformed += 1
    return payload


def _repaired(data: bytes) -> object:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return orjson.loads(data.decode("utf-8", "replace"))
        except orjson.JSONDecodeError:
            return None
    return None  # valid text, not JSON


def json_object(data: bytes, state: AdapterState) -> dict[str, Any] | None:
    """An event's JSON object; anything else is counted on `state.malformed` and skipped."""
    payload = event_json(data, state)
    if isinstance(payload, dict):
        return payload
    if payload is not None:
        state.malformed += 1
    return None


def _timed_out(provider: ProviderConfig, which: str) -> GatewayError:
    if which != "silence":
        return upstream_timeout(provider.name, which)
    return upstream_silence_timeout(provider.name, provider.timeouts.max_silence)


def _redirected(provider: ProviderConfig, response: aiohttp.ClientResponse) -> GatewayError:
    """A 3xx is not followed: the prompt and the provider's credentials must not go to another address."""
    location = response.headers.get("Location", "")
    target = location.split("?", 1)[0].split("#", 1)[0][:200]  # a query may hold a key or a token
    shown = f" to {redact(target, provider.secrets)}" if target else ""
    return upstream_redirect(provider.name, response.status, shown)


def _framing(provider: ProviderConfig, error: HttpProcessingError) -> str:
    """aiohttp's parser message, which may quote the provider's bytes: redacted and short."""
    return _shown(provider, str(error.message or type(error).__name__))[:120]


def _broken_connection(provider: ProviderConfig, protocol: ResponseHandler | None) -> GatewayError:
    """The connection closed under a body that had not ended: broken framing, or a plain reset."""
    cause = protocol.exception() if protocol is not None else None
    if isinstance(cause, HttpProcessingError):
        return upstream_bad_stream(provider.name, f"invalid HTTP framing ({_framing(provider, cause)})")
    return upstream_reset(provider.name)


class _ConnectionWatch:
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
            content.set_exception(_broken_connection(self.provider, self.protocol))


_WATCHES: weakref.WeakKeyDictionary[ResponseHandler, _ConnectionWatch] = weakref.WeakKeyDictionary()


def _watch(response: aiohttp.ClientResponse, provider: ProviderConfig) -> _ConnectionWatch | None:
    connection = response.connection  # None when the whole body came with the headers
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return None
    watch = _WATCHES.get(protocol)
    if watch is None:
        closed = protocol.closed
        if closed is None:  # already lost: the body's reader has been told
            return None
        watch = _WATCHES[protocol] = _ConnectionWatch(protocol, closed)
    watch.content, watch.provider = response.content, provider
    return watch


async def _error_body(content: aiohttp.StreamReader) -> bytes:
    """Up to ERROR_BODY_LIMIT bytes of an error body, however it is split across reads."""
    body = bytearray()
    while len(body) < ERROR_BODY_LIMIT:
        data = await content.readany()
        if not data:
            break
        body += data
    return bytes(body[:ERROR_BODY_LIMIT])


def _release_when_complete(response: aiohttp.ClientResponse, loop: asyncio.AbstractEventLoop) -> None:
    """After the provider's end-of-stream event: the connection goes back to the pool as soon as its
    body ends (aiohttp releases it at the body's end), or is closed if the provider holds it open."""
    if response.content.is_eof():
        response.release()
    else:
        loop.call_later(END_GRACE, response.close)  # a no-op once the body ended and the connection was released


async def upstream_events(session: aiohttp.ClientSession, request: UpstreamRequest, provider: ProviderConfig,
                          ending: Ending | None, decoder: Decoder, content_type: str = "text/event-stream",
                          error_hook: ErrorHook | None = None,
                          first_bytes: list[tuple[str, float]] | None = None) -> AsyncGenerator[Any, None]:
    """The provider's events, cut by `decoder` from a body of `content_type`; an error answer is read by
    `error_hook` first. A consumer that stops once `ending.done` is set (the provider's end-of-stream
    event) does not wait for the connection to end: it is released or closed."""
    timeouts = provider.timeouts
    name = provider.name
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeouts.total
    try:
        async with asyncio.timeout(min(timeouts.first_byte, timeouts.total)):
            response = await session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
                allow_redirects=False,
            )
    except TimeoutError:
        raise upstream_timeout(name, "total" if timeouts.total <= timeouts.first_byte else "first_byte") from None
    except aiohttp.ConnectionTimeoutError:
        raise upstream_timeout(name, "connect") from None
    except aiohttp.ClientConnectorError as exc:
        raise upstream_unreachable(name, redact(str(exc.os_error.strerror or exc.os_error))) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        raise upstream_reset(name) from None
    except aiohttp.ClientError as exc:
        raise upstream_bad_stream(name, type(exc).__name__) from None

    if first_bytes is not None:  # the time to the response's headers, for the metrics
        first_bytes.append((name, loop.time() - started))
    finished = False
    watchdog: _ReadWatchdog | None = None
    watch = _watch(response, provider)
    try:
        watchdog = _ReadWatchdog(response, timeouts, deadline)
        if 300 <= response.status < 400:
            raise _redirected(provider, response)
        if response.status != 200:
            try:
                body = await _error_body(response.content)
            except (_Expired, GatewayError, HttpProcessingError, aiohttp.ClientError, RuntimeError):
                body = b""  # the status says enough
            error = error_hook(provider, response.status, body, response.headers) if error_hook else None
            raise error or http_error(provider, response.status, body, response.headers)
        answered_type = response.headers.get("Content-Type", "")
        if not answered_type.startswith(content_type):
            raise upstream_bad_stream(name, f"expected {content_type}, got '{answered_type[:60] or 'nothing'}'")

        content = response.content
        while True:
            data = await content.readany()
            if not data:
                break
            watchdog.last_read = loop.time()
            if not watchdog.got_data:
                watchdog.first_data()
            events = decoder.feed(data)
            if events:
                watchdog.waiting_on_client = True
                for event in events:
                    yield event
                watchdog.waiting_on_client = False
                watchdog.last_read = watchdog.last_event = loop.time()
        finished = True
    except _Expired as exc:
        raise _timed_out(provider, exc.which) from None
    except (SSEDecodeError, FramingError) as exc:
        raise upstream_bad_stream(name, str(exc)) from None
    except TimeoutError:
        raise upstream_timeout(name, "total") from None
    except HttpProcessingError as exc:  # aiohttp's parser errors are not ClientErrors
        raise upstream_bad_stream(name, f"invalid HTTP framing ({_framing(provider, exc)})") from None
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        raise upstream_reset(name) from None
    except RuntimeError:
        if watch is None or watch.protocol is None or watch.protocol.is_connected():
            raise  # not aiohttp's "Connection closed." from a read
        raise _broken_connection(provider, watch.protocol) from None
    finally:
        if watch is not None:
            watch.content = None
        if watchdog is not None:
            watchdog.cancel()
        if finished:
            response.release()
        elif ending is not None and ending.done:
            _release_when_complete(response, loop)
        else:
            response.close()
