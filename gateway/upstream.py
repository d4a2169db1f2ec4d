"""Opening a provider's stream: the HTTP request, its timeouts, HTTP error mapping, and SSE decoding.

Every way out of `sse_events` (end, error, timeout, cancellation, the consumer closing it) leaves the
upstream connection either fully read and pooled, or closed at once.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson

from .config import ProviderConfig
from .errors import (
    GatewayError,
    redact,
    upstream_bad_stream,
    upstream_reset,
    upstream_timeout,
    upstream_unreachable,
)
from .sse import SSEDecodeError, SSEDecoder, SSEEvent

ERROR_BODY_LIMIT = 64 * 1024
PASSED_HEADERS = ("retry-after", "retry-after-ms")
_MESSAGE_LIMIT = 500


@dataclass
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes


class _Expired(Exception):
    def __init__(self, which: str) -> None:
        self.which = which


class _ReadWatchdog:
    """One timer per stream for the idle, first-byte and total timeouts.

    Reads only record the time (the hot path); the timer re-arms itself lazily, and on expiry
    fails the pending read and closes the connection, whichever task is waiting on it.
    """

    __slots__ = ("_loop", "_response", "_first_byte", "_idle", "_deadline", "last_read", "got_data", "_handle")

    def __init__(self, response: aiohttp.ClientResponse, first_byte: float, idle: float, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._response = response
        self._first_byte = first_byte
        self._idle = idle
        self._deadline = deadline
        self.last_read = self._loop.time()
        self.got_data = False
        self._handle = self._loop.call_at(min(self.last_read + first_byte, deadline), self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if now >= self._deadline:
            return self._expire("total")
        limit = self.last_read + (self._idle if self.got_data else self._first_byte)
        if now >= limit:
            return self._expire("idle" if self.got_data else "first_byte")
        self._handle = self._loop.call_at(min(limit, self._deadline), self._check)

    def first_data(self) -> None:
        """The body began: from now on the idle timeout applies, which may be shorter than first_byte."""
        self.got_data = True
        self._handle.cancel()
        self._handle = self._loop.call_at(min(self.last_read + self._idle, self._deadline), self._check)

    def _expire(self, which: str) -> None:
        self._response.content.set_exception(_Expired(which))
        self._response.close()

    def cancel(self) -> None:
        self._handle.cancel()


def _error_payload(body: bytes) -> dict | None:
    """A provider's error body as a JSON object, unwrapping Gemini's occasional one-element array."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    return payload if isinstance(payload, dict) else None


def error_message(body: bytes) -> str | None:
    """The human message in a provider's error body, whichever of the usual shapes it has."""
    payload = _error_payload(body)
    if payload is None:
        return None
    error = payload.get("error", payload)
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        for key in ("message", "detail", "msg"):
            if isinstance(error.get(key), str):
                return error[key]
    if isinstance(payload.get("detail"), str):
        return payload["detail"]
    return None


def _shown(provider: ProviderConfig, message: str | None) -> str:
    if not message:
        return ""
    message = redact(message, provider.secrets)
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + "..."
    return message


def _retry_delay(body: bytes) -> int | None:
    """Seconds from a Google `RetryInfo` detail (`"retryDelay": "37s"`), rounded up."""
    error = (_error_payload(body) or {}).get("error")
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(1, math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


def http_error(provider: ProviderConfig, status: int, body: bytes, headers) -> GatewayError:
    """Maps a provider's HTTP error: 400, 404 and 429 keep their status; a refused key and 5xx become 502."""
    message = _shown(provider, error_message(body))
    passed = {k: v for k, v in headers.items() if k.lower() in PASSED_HEADERS or k.lower().startswith("x-ratelimit-")}
    name = provider.name
    if status == 400 and b"API_KEY_INVALID" in body:  # Gemini refuses a bad key with a 400
        status = 401
    if status == 429 and "retry-after" not in {k.lower() for k in passed}:
        delay = _retry_delay(body)  # Gemini says when to retry in the body only
        if delay is not None:
            passed["Retry-After"] = str(delay)
    if status == 429:
        return GatewayError(429, f"provider '{name}' is rate limiting: {message or 'too many requests'}",
                            type="rate_limit_error", code="upstream_rate_limited", headers=passed)
    if status in (401, 403):
        variables = " or ".join(provider.key_vars) or "its api_key"
        return GatewayError(502, f"provider '{name}' refused the gateway's credentials (HTTP {status}): check {variables}",
                            type="upstream_error", code="upstream_auth_failed")
    if status == 404:
        return GatewayError(404, f"provider '{name}' answered not found: {message or 'no such model or path'}",
                            code="upstream_not_found")
    if status == 408:
        return upstream_timeout(name, "provider")
    if 400 <= status < 500:
        return GatewayError(400, f"provider '{name}' rejected the request: {message or f'HTTP {status}'}",
                            code="upstream_bad_request")
    detail = f": {message}" if message else ""
    return GatewayError(502, f"provider '{name}' failed with HTTP {status}{detail}",
                        type="upstream_error", code="upstream_error", headers=passed)


def stream_error(provider: ProviderConfig, payload: object) -> GatewayError:
    """An error a provider sent inside a 200 stream (`event: error`, or an `{"error": ...}` chunk)."""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    status = None
    if isinstance(error, dict):
        status = error.get("status_code") or error.get("code")
    message = error_message(orjson.dumps(payload)) or "unknown error"
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 600:
        error = http_error(provider, status, b"", {})  # the same status rules as an HTTP error
    else:
        error = GatewayError(502, "", type="upstream_error", code="upstream_stream_error")
    error.message = f"provider '{provider.name}' sent an error in its stream: {_shown(provider, message)}"
    return error


def json_object(data: bytes, state) -> dict | None:
    """An event's JSON object; anything else is counted on `state.malformed` and skipped."""
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        return payload
    state.malformed += 1
    return None


async def sse_events(session: aiohttp.ClientSession, request: UpstreamRequest,
                     provider: ProviderConfig) -> AsyncIterator[SSEEvent]:
    timeouts = provider.timeouts
    name = provider.name
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeouts.total
    try:
        async with asyncio.timeout(min(timeouts.first_byte, timeouts.total)):
            response = await session.post(
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect),
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

    finished = False
    watchdog: _ReadWatchdog | None = None
    try:
        if response.status != 200:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                body = await response.content.read(ERROR_BODY_LIMIT)
            raise http_error(provider, response.status, body, response.headers)
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/event-stream"):
            raise upstream_bad_stream(name, f"expected text/event-stream, got '{content_type[:60] or 'nothing'}'")

        decoder = SSEDecoder(provider.max_event_bytes)
        watchdog = _ReadWatchdog(response, timeouts.first_byte, timeouts.idle, deadline)
        content = response.content
        while True:
            data = await content.readany()
            if not data:
                break
            watchdog.last_read = loop.time()
            if not watchdog.got_data:
                watchdog.first_data()
            for event in decoder.feed(data):
                yield event
        finished = True
    except _Expired as exc:
        raise upstream_timeout(name, exc.which) from None
    except SSEDecodeError as exc:
        raise upstream_bad_stream(name, str(exc)) from None
    except TimeoutError:
        raise upstream_timeout(name, "total") from None
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
        raise upstream_reset(name) from None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if finished:
            response.release()
        else:
            response.close()
