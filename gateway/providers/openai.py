"""OpenAI's wire format, spoken by OpenAI and the compatible providers (Groq, Mistral, DeepSeek, vLLM...).

The chunks already have the client's shape, ids included (as the provider sent them); the `normalize`
middleware evens out the providers' variants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..errors import upstream_truncated
from ..sse import SSEEvent
from ..upstream import UpstreamRequest, json_object, stream_error
from .base import HttpAdapter, Option

if TYPE_CHECKING:
    from ..context import RequestContext

# Fields the gateway owns in the body it sends upstream.
_GATEWAY_FIELDS = ("model", "stream", "stream_options")


class State:
    __slots__ = ("provider", "text_completion", "choices", "finished", "done", "malformed")

    def __init__(self, ctx: RequestContext) -> None:
        self.provider = ctx.provider
        self.text_completion = ctx.endpoint == "completions"
        self.choices = ctx.choices
        self.finished: set[int] = set()
        self.done = False
        self.malformed = 0


def build_request(ctx: RequestContext) -> UpstreamRequest:
    provider = ctx.provider
    body = {k: v for k, v in ctx.body.items() if k not in _GATEWAY_FIELDS}
    body["model"] = ctx.model
    body["stream"] = True  # both modes stream upstream: one code path
    if provider.stream_options:
        body["stream_options"] = {"include_usage": True}
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **provider.headers}
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    path = "/chat/completions" if ctx.endpoint == "chat" else "/completions"
    return UpstreamRequest(provider.base_url + path, headers, orjson.dumps(body))


def new_state(ctx: RequestContext) -> State:
    return State(ctx)


def parse_event(event: SSEEvent, state: State) -> tuple[dict[str, Any], ...]:
    data = event.data
    if state.done:
        return ()
    if event.event == "error":
        raise stream_error(state.provider, json_object(data, state) or {"error": data.decode("utf-8", "replace")})
    if data == b"[DONE]":
        state.done = True
        return ()
    chunk = json_object(data, state)
    if chunk is None:
        return ()
    if chunk.get("error"):
        raise stream_error(state.provider, chunk)
    choices = chunk.get("choices")
    if choices:
        for choice in choices:
            if state.text_completion and "text" in choice:
                choice["delta"] = {"content": choice.pop("text")}
            if choice.get("finish_reason"):
                state.finished.add(choice.get("index", 0))
    return (chunk,)


def finish(state: State) -> tuple[dict[str, Any], ...]:
    if len(state.finished) < state.choices:
        raise upstream_truncated(state.provider.name)
    return ()


class OpenAIAdapter(HttpAdapter[State, SSEEvent]):
    kind = "openai"
    # stream_options: false for a provider that rejects stream_options.include_usage (ProviderConfig's default: true)
    options = (Option("stream_options", bool),)
    build_request = staticmethod(build_request)
    new_state = staticmethod(new_state)
    parse_event = staticmethod(parse_event)  # type: ignore[assignment]  # its chunks are the provider's own dicts
    finish = staticmethod(finish)  # type: ignore[assignment]


ADAPTER = OpenAIAdapter()

