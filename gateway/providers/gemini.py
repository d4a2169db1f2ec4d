"""Google Gemini's `:streamGenerateContent?alt=sse` wire format (the Gemini API and Vertex AI).

One module per concept: gemini_request.py turns the OpenAI body into a GenerateContentRequest (with
gemini_schema.py for JSON Schemas), gemini_stream.py turns each event into OpenAI chunks (with
gemini_partial_args.py for Vertex's streamed function arguments), and this module is the adapter: the
URL and headers, and Gemini's own error bodies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from ..errors import GatewayError
from ..sse import SSEEvent
from ..upstream import UpstreamRequest, error_payload, http_error as shared_http_error
from .base import HttpAdapter
from .gemini_request import checked_model, request_body
from .gemini_stream import State, finish, parse_event

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..context import RequestContext

__all__ = ["ADAPTER", "State", "build_request", "finish", "http_error", "new_state", "parse_event"]


def build_request(ctx: RequestContext) -> UpstreamRequest:
    provider = ctx.provider
    model = checked_model(ctx.model)
    body = request_body(ctx.body, ctx.endpoint)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **provider.headers}
    if provider.api_key:
        headers["x-goog-api-key"] = provider.api_key  # never in the URL, where logs would keep it
    url = f"{provider.base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return UpstreamRequest(url, headers, orjson.dumps(body))


def new_state(ctx: RequestContext) -> State:
    return State(ctx)


def http_error(provider: ProviderConfig, status: int, body: bytes, headers: Mapping[str, str]) -> GatewayError | None:
    """Gemini refuses a bad key with a 400 (`API_KEY_INVALID`), and says when to retry a 429 in its body
    only (a `RetryInfo` detail): an auth failure, and a Retry-After, as other providers' answers are read."""
    if status == 400 and b"API_KEY_INVALID" in body:
        return shared_http_error(provider, 401, body, headers)
    if status == 429 and not any(k.lower() == "retry-after" for k in headers):
        delay = retry_delay(body)
        if delay is not None:
            return shared_http_error(provider, 429, body, {**headers, "Retry-After": str(delay)})
    return None


def retry_delay(body: bytes) -> int | None:
    """Seconds from a Google `RetryInfo` detail (`"retryDelay": "37s"`), rounded up."""
    error = (error_payload(body) or {}).get("error")
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(1, math.ceil(float(delay[:-1])))
            except ValueError:
                return None
    return None


class GeminiAdapter(HttpAdapter[State, SSEEvent]):
    kind = "gemini"
    build_request = staticmethod(build_request)
    new_state = staticmethod(new_state)
    parse_event = staticmethod(parse_event)
    finish = staticmethod(finish)

    def http_error(self, provider: ProviderConfig, status: int, body: bytes,
                   headers: Mapping[str, str]) -> GatewayError | None:
        return http_error(provider, status, body, headers)


ADAPTER = GeminiAdapter()
