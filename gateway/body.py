"""Reading a request body: bounded in time, in bytes on the wire, and in bytes once inflated.

aiohttp is told not to inflate (`auto_decompress=False`, see gateway/app.py): its parser would inflate a
gzip body as it arrives, before the handler runs and whatever the handler decides. Here inflation is
asked for at most one byte past the limit at a time, so a body that inflates to gigabytes costs no more
than the limit before its 413.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from .errors import GatewayError, invalid_param
from .server import parser_reason

SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate")
_GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for a gzip member
_ZLIB = zlib.MAX_WBITS  # for deflate as RFC 9110 means it: a zlib stream
_RAW_DEFLATE = -zlib.MAX_WBITS  # for deflate as many clients send it: without the zlib header


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"the request body is larger than the limit of {limit} bytes (inflated, when it "
                        "is compressed)", code="request_too_large")


def _malformed(detail: str) -> GatewayError:
    return invalid_param(None, f"the request body is malformed: {detail}", "invalid_body")


def content_coding(header: str | None) -> str:
    """The one content coding of a body ("identity" for none); anything else is a 415."""
    if header is None:  # the usual request
        return "identity"
    codings = [c.strip().lower() for c in (header or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    coding = {"x-gzip": "gzip"}.get(codings[0], codings[0])
    if len(codings) > 1 or coding not in SUPPORTED_ENCODINGS:
        shown = header if len(header or "") <= 64 else f"{(header or '')[:64]}..."
        raise GatewayError(415, f"Content-Encoding '{shown}' is not supported: send the body as is, or in one "
                           "of gzip or deflate", code="unsupported_content_encoding")
    return coding


class Inflater:
    """Inflates a gzip (one or more members) or deflate (zlib or raw) body fed in pieces, never producing
    more than `limit` bytes."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0  # bytes produced so far
        self._parts: list[bytes] = []
        self._stream: zlib._Decompress | None = zlib.decompressobj(_GZIP) if coding == "gzip" else None
        self._head = b""  # a deflate body's first byte, until the second one says which deflate it is

    def feed(self, data: bytes) -> None:
        if self._stream is None:  # deflate, kind not known yet
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            self._head = b""
            self._stream = zlib.decompressobj(_ZLIB if _is_zlib_header(data) else _RAW_DEFLATE)
        try:
            while data:
                stream = self._stream
                self._add(stream.decompress(data, self.limit - self.size + 1))
                data = stream.unconsumed_tail
                if stream.eof:
                    data = stream.unused_data
                    if data and self.coding != "gzip":
                        raise _malformed("data after the end of the deflate stream")
                    if data:
                        self._stream = zlib.decompressobj(_GZIP)  # the next gzip member
        except zlib.error as exc:
            raise _malformed(f"it is not valid {self.coding} ({exc})") from None

    def finish(self) -> bytes:
        if self._stream is None:
            if self._head or self.coding != "deflate":
                raise _malformed(f"the {self.coding} data is truncated")
            return b""  # an empty deflate body
        try:
            self._add(self._stream.flush())  # all input was inflated in feed(): at most a few bytes remain
        except zlib.error as exc:
            raise _malformed(f"it is not valid {self.coding} ({exc})") from None
        if not self._stream.eof:
            raise _malformed(f"the {self.coding} data is truncated")
        return b"".join(self._parts)

    def _add(self, part: bytes) -> None:
        self.size += len(part)
        if self.size > self.limit:
            raise too_large(self.limit)
        if part:
            self._parts.append(part)


def _is_zlib_header(data: bytes) -> bool:
    """RFC 1950: compression method 8, and the two header bytes a multiple of 31."""
    return data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The request body, inflated; a 413 past `limit` bytes (on the wire or inflated), a 408 when it takes
    longer than `timeout` seconds to arrive, a 415 for a content coding not served, a 400 when malformed."""
    coding = content_coding(request.headers.get(hdrs.CONTENT_ENCODING))
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    inflater = Inflater(coding, limit) if coding != "identity" else None
    content = request.content
    parts: list[bytes] = []
    received = 0
    try:
        if inflater is None and content.is_eof():  # the whole body is here already (the usual small request)
            body = content.read_nowait(-1)
            if len(body) > limit:
                raise too_large(limit)
            return body
        async with asyncio.timeout(timeout):
            while chunk := await content.readany():
                received += len(chunk)
                if received > limit:
                    raise too_large(limit)
                if inflater is None:
                    parts.append(chunk)
                else:
                    inflater.feed(chunk)
    except TimeoutError:
        raise GatewayError(408, f"the request body did not arrive within {timeout:g} s (server.request_timeout)",
                           type="timeout_error", code="request_timeout") from None
    except (RequestPayloadError, HttpProcessingError) as exc:
        raise _malformed(parser_reason(exc)) from None
    return inflater.finish() if inflater is not None else b"".join(parts)
