"""Opening a provider's stream: the HTTP request, its timeouts, HTTP error mapping, and event decoding
(with the adapter's decoder: SSE for every format so far). The read timeouts and the watch on the
connection are gateway/upstream_watch.py's.

Every way out of `upstream_events` (end, error, timeout, cancellation, the consumer closing it) leaves the
upstream connection either fully read and pooled, or closed at once; after the provider's end-of-stream
event, pooled when its body ends, or closed if it does not end within END_GRACE.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError

from .config import ProviderConfig
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
from .upstream_watch import Expired, ReadWatchdog, broken_connection, framing_reason, watch as watch_connection

if TYPE_CHECKING:  # base.py imports this module
    from .providers.base import AdapterState

ERROR_BODY_LIMIT = 64 * 1024
PASSED_HEADERS = ("retry-after", "retry-after-ms")
_MESSAGE_LIMIT = 500
END_GRACE = 1.0  # seconds a connection may take to end its body after the provider's end-of-stream event


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes

    def __post_init__(self) -> None:
        # orjson's bytes keep a 4 KiB allocation whatever their length, and the body lives as long as the
        # stream (a retry sends it again): copied to its own size, it costs an idle stream 4 KiB less
        self.body = bytes(memoryview(self.body))


class Ending(Protocol):
    done: bool  # the provider sent its end-of-stream event


class FramingError(ValueError):
    """Bytes that break an event framing other than SSE's (whose decoder raises SSEDecodeError)."""


class Decoder(Protocol):
    def feed(self, data: bytes) -> Sequence[Any]: ...


# An adapter's own reading of an error answer: None leaves it to `http_error`.
ErrorHook = Callable[[ProviderConfig, int, bytes, Mapping[str, str]], GatewayError | None]


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


@functools.lru_cache(maxsize=64)  # one per connect timeout configured: not an object per request
def _client_timeout(connect: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect)


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
                          first_bytes: list[tuple[str, float]] | None = None
                          ) -> AsyncGenerator[Sequence[Any], None]:
    """The provider's events, cut by `decoder` from a body of `content_type`, as one non-empty list per
    read; an error answer is read by `error_hook` first. A consumer that stops once `ending.done` is set
    (the provider's end-of-stream event) does not wait for the connection to end: it is released or closed."""
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
                timeout=_client_timeout(timeouts.connect),
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
    del request  # sent: a stream does not hold its request body (the prompt) for the rest of its life

    if first_bytes is not None:  # the time to the response's headers, for the metrics
        first_bytes.append((name, loop.time() - started))
    finished = False
    watchdog: ReadWatchdog | None = None
    watch = watch_connection(response, provider)
    try:
        watchdog = ReadWatchdog(response, timeouts, deadline)
        if 300 <= response.status < 400:
            raise _redirected(provider, response)
        if response.status != 200:
            try:
                body = await _error_body(response.content)
            except (Expired, GatewayError, HttpProcessingError, aiohttp.ClientError, RuntimeError):
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
                yield events
                watchdog.waiting_on_client = False
                watchdog.last_read = watchdog.last_event = loop.time()
                del events  # an idle stream does not hold its last read while it waits for the next
            del data
        finished = True
    except Expired as exc:
        raise _timed_out(provider, exc.which) from None
    except (SSEDecodeError, FramingError) as exc:
        raise upstream_bad_stream(name, str(exc)) from None
    except TimeoutError:
        raise upstream_timeout(name, "total") from None
    except HttpProcessingError as exc:  # aiohttp's parser errors are not ClientErrors
        raise upstream_bad_stream(name, f"invalid HTTP framing ({framing_reason(provider, exc)})") from None
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        raise upstream_reset(name) from None
    except RuntimeError:
        if watch is None or watch.protocol is None or watch.protocol.is_connected():
            raise  # not aiohttp's "Connection closed." from a read
        raise broken_connection(provider, watch.protocol) from None
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
