"""The adapter contract (gateway/providers/base.py) and the chunk vocabulary (gateway/chunks.py).

A kind added to ADAPTERS is configurable and served with its own framing, options and error reading,
with no other file of the gateway knowing it; ids follow one rule for every provider.
"""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from gateway.chunks import CHUNK_OBJECT, Envelope, response_id_of
from gateway.config import ConfigError, ProviderConfig, parse_config
from gateway.errors import upstream_truncated
from gateway.providers import ADAPTERS, gemini
from gateway.providers.base import FramingError, HttpAdapter, Option, UpstreamRequest
from gateway.upstream import http_error as shared_http_error, json_object
from gateway.validation import max_output_tokens, prompt_text
from tests.conftest import FAKE_KEY
from tests.fakes.upstream import Reply, split_at
from tests.helpers import read_events

# ---------------------------------------------------------------------------------------------------
# One id rule


def _ids(events: list[bytes]) -> set[str]:
    return {orjson.loads(e.removeprefix(b"data: "))["id"] for e in events if e.startswith(b"data: {")}


ANTHROPIC = (b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","model":"claude-x",'
             b'"usage":{"input_tokens":1}}}\n\n'
             b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
             b'"content_block":{"type":"text","text":""}}\n\n'
             b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
             b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
             b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
             b'"usage":{"output_tokens":1}}\n\n'
             b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
GEMINI = (b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP",'
          b'"index":0}],"responseId":"resp1","modelVersion":"gemini-x"}\n\n')


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize(("model", "stream"), [("ant/claude-x", ANTHROPIC), ("gem/gemini-x", GEMINI),
                                               ("demo/echo", None)])
async def test_ids_have_the_endpoints_prefix_whatever_the_provider(upstream, gateway, endpoint, model, stream):
    """A text completion from Anthropic had an id starting `chatcmpl-`, from Gemini `cmpl-`: one rule now."""
    if stream is not None:
        upstream.stream(stream)
    request = {"model": model, "stream": True, "stream_options": {"include_usage": True}}
    if endpoint == "chat":
        request["messages"] = [{"role": "user", "content": "hi"}]
    else:
        request["prompt"] = "hi"
    response = await gateway.post("/v2/chat/completions" if endpoint == "chat" else "/v2/completions", json=request)
    assert response.status == 200
    (one_id,) = _ids(await read_events(response))
    prefix = "chatcmpl-" if endpoint == "chat" else "cmpl-"
    assert one_id.startswith(prefix) and not one_id.startswith("cmpl-chatcmpl-")
    assert one_id[len(prefix):] in ("msg_1", "resp1") or one_id[len(prefix):].startswith("demo-")


def test_envelope_builds_openai_chunks_in_openais_field_order():
    envelope = Envelope("completions", 1782955817, "m")
    assert envelope.id.startswith("cmpl-")
    envelope.identify("abc")
    chunk = envelope.delta(1, {"content": "x"})
    assert list(chunk) == ["id", "object", "created", "model", "choices"]
    assert chunk == {"id": "cmpl-abc", "object": CHUNK_OBJECT, "created": 1782955817, "model": "m",
                     "choices": [{"index": 1, "delta": {"content": "x"}, "logprobs": None, "finish_reason": None}]}
    assert envelope.finish(0, "stop")["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                                         "finish_reason": "stop"}
    assert envelope.usage({"total_tokens": 1})["choices"] == []
    assert response_id_of("chat", "x") == "chatcmpl-x"


# ---------------------------------------------------------------------------------------------------
# Request fields with two spellings


def test_two_spellings_are_read_by_one_rule():
    assert max_output_tokens({"max_tokens": 5}) == 5
    assert max_output_tokens({"max_completion_tokens": 3, "max_tokens": 5}) == 3
    assert max_output_tokens({}) is None
    assert prompt_text({"prompt": ["a", "b"]}) == "a\nb"
    assert prompt_text({"prompt": "a"}) == "a"


@pytest.mark.parametrize("model", ["ant/claude-x", "gem/gemini-x", "demo/echo"])
async def test_max_completion_tokens_wins_over_max_tokens_for_every_adapter(upstream, gateway, model):
    """The demo model read max_tokens first, Anthropic and Gemini max_completion_tokens: one rule now."""
    upstream.stream(ANTHROPIC if model.startswith("ant") else GEMINI)
    response = await gateway.post("/v2/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "say a lot"}],
        "max_completion_tokens": 2, "max_tokens": 50})
    answer = await response.json()
    if model == "demo/echo":
        assert answer["usage"]["completion_tokens"] == 2
        assert answer["choices"][0]["finish_reason"] == "length"
    elif model.startswith("ant"):
        assert upstream.received[0].body["max_tokens"] == 2
    else:
        assert upstream.received[0].body["generationConfig"]["maxOutputTokens"] == 2


# ---------------------------------------------------------------------------------------------------
# Kind options come from the adapters


def _problems(provider: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"providers:\n  - {provider}\n", "t.yaml")
    return [(p.path, p.message) for p in caught.value.problems]


def test_kinds_and_kind_options_are_read_from_the_adapters():
    assert _problems("{name: a, kind: cohere, base_url: 'http://x'}") == [
        ("providers[0].kind", f"must be one of {', '.join(ADAPTERS)}")]
    assert ("providers[0].stream_options", "only the openai provider takes stream_options") in _problems(
        "{name: a, kind: anthropic, base_url: 'http://x', stream_options: false}")
    assert ("providers[0].token_interval", "only the demo provider takes token_interval") in _problems(
        "{name: a, kind: gemini, base_url: 'http://x', token_interval: 0}")
    assert ("providers[0].token_interval", "must be at least 0") in _problems(
        "{name: a, kind: demo, token_interval: -1}")
    assert _problems("{name: a, kind: demo, base_url: 'http://x'}") == [
        ("providers[0]", "the demo provider takes no base_url or api_key")]


# ---------------------------------------------------------------------------------------------------
# Provider-specific error bodies


def _provider() -> ProviderConfig:
    return ProviderConfig(name="gem", kind="gemini", api_key=FAKE_KEY)


def test_gemini_error_bodies_are_read_by_the_gemini_adapter_not_the_shared_mapping():
    bad_key = b'{"error": {"code": 400, "message": "API key not valid", "details": [{"reason": "API_KEY_INVALID"}]}}'
    assert shared_http_error(_provider(), 400, bad_key, {}).code == "upstream_bad_request"
    error = gemini.ADAPTER.http_error(_provider(), 400, bad_key, {})
    assert (error.status, error.code) == (502, "upstream_auth_failed")

    quota = b'[{"error": {"code": 429, "message": "Quota", "details": [{"retryDelay": "36.5s"}]}}]'
    assert "Retry-After" not in shared_http_error(_provider(), 429, quota, {}).headers
    assert gemini.ADAPTER.http_error(_provider(), 429, quota, {}).headers["Retry-After"] == "37"
    given = gemini.ADAPTER.http_error(_provider(), 429, quota, {"retry-after": "2"})
    assert given is None  # the provider's own header is passed on by the shared mapping
    assert gemini.ADAPTER.http_error(_provider(), 500, b"oops", {}) is None


# ---------------------------------------------------------------------------------------------------
# A new wire format with its own framing: one adapter object, registered in ADAPTERS


class _LinesDecoder:
    """Newline-delimited JSON: a format that is not SSE (as Bedrock's binary event stream is not)."""

    def __init__(self) -> None:
        self.partial = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 1000:
            raise FramingError("a line over 1000 bytes")
        return [line for line in lines if line]


class _LinesState:
    def __init__(self, ctx) -> None:
        self.provider = ctx.provider
        self.envelope = Envelope(ctx.endpoint, ctx.created, ctx.model)
        self.malformed = 0
        self.done = False
        self.finished = False


class _LinesAdapter(HttpAdapter[_LinesState, bytes]):
    kind = "lines"
    content_type = "application/x-ndjson"
    options = (Option("stream_options", bool),)

    def new_state(self, ctx) -> _LinesState:
        return _LinesState(ctx)

    def build_request(self, ctx) -> UpstreamRequest:
        body = {"text": ctx.body["messages"][-1]["content"], "usage": ctx.provider.stream_options}
        return UpstreamRequest(f"{ctx.provider.base_url}/generate", {"Content-Type": "application/json"},
                               orjson.dumps(body))

    def decoder(self, provider) -> _LinesDecoder:
        return _LinesDecoder()

    def parse_event(self, event: bytes, state: _LinesState):
        payload = json_object(event, state)
        if payload is None:
            return ()
        if payload.get("end"):
            state.done = state.finished = True
            return (state.envelope.finish(0, "stop"),)
        return (state.envelope.delta(0, {"content": payload["token"]}),)

    def finish(self, state: _LinesState):
        if not state.finished:
            raise upstream_truncated(state.provider.name)
        return ()

    def http_error(self, provider, status, body, headers):
        if status == 418:
            return shared_http_error(provider, 429, body, headers)
        return None


@pytest.fixture
def lines_gateway(monkeypatch, upstream, aiohttp_client):
    from gateway.app import create_app
    from tests.conftest import GatewayTestServer

    monkeypatch.setitem(ADAPTERS, "lines", _LinesAdapter())

    async def make():
        config = parse_config(f"providers:\n  - {{name: ln, kind: lines, base_url: '{upstream.url}', "
                              "stream_options: false, retry: {attempts: 1}}\n", "t.yaml")
        return await aiohttp_client(GatewayTestServer(create_app(config)))

    return make


async def test_a_kind_registered_in_adapters_is_configured_and_served_with_its_own_framing(upstream,
                                                                                         lines_gateway):
    gateway = await lines_gateway()
    lines = b'{"token": "Hel"}\n{"token": "lo"}\nnot json\n{"end": true}\n'
    upstream.queue(Reply(steps=split_at(lines, 5), headers={"Content-Type": "application/x-ndjson"}))
    response = await gateway.post("/v2/chat/completions", json={
        "model": "ln/any", "messages": [{"role": "user", "content": "hi"}]})
    answer = await response.json()
    assert response.status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "Hello"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["id"].startswith("chatcmpl-")
    assert upstream.received[0].path == "/generate"
    assert upstream.received[0].body == {"text": "hi", "usage": False}

    upstream.queue(Reply(steps=[b'{"token": "x"}\n' + b"y" * 2000]))  # Content-Type not the format's
    response = await gateway.post("/v2/chat/completions", json={
        "model": "ln/any", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == 502
    assert "expected application/x-ndjson" in (await response.json())["error"]["message"]

    upstream.queue(Reply(steps=[b'{"token": "x"}\n' + b"y" * 2000], headers={"Content-Type": "application/x-ndjson"}))
    response = await gateway.post("/v2/chat/completions", json={
        "model": "ln/any", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == 502
    assert "a line over 1000 bytes" in (await response.json())["error"]["message"]  # the decoder's FramingError

    upstream.queue(Reply(status=418, steps=[b'{"error": "teapot"}'], headers={"Content-Type": "application/json"}))
    response = await gateway.post("/v2/chat/completions", json={
        "model": "ln/any", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == 429  # the adapter's http_error read it


def test_every_adapter_declares_the_contract():
    for kind, adapter in ADAPTERS.items():
        assert adapter.kind == kind
        assert all(isinstance(o, Option) and o.key in ProviderConfig.__dataclass_fields__ for o in adapter.options)
        if adapter.remote:
            state = adapter.new_state(SimpleNamespace(provider=_provider(), endpoint="chat", created=1, model="m",
                                                      request_id="r", choices=1, body={}))
            assert state.malformed == 0 and state.done is False
