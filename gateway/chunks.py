"""The chunk vocabulary: what flows from an adapter through the middlewares to the client.

Everything between an adapter and the client's encoder is an OpenAI chat chunk, whatever the endpoint
(responses.py turns it into a text completion for /completions at the very end). Its envelope
(`id`, `object`, `created`, `model`) is made here only, by an `Envelope`, the same way for every provider:

- `id` is the endpoint's prefix (`chatcmpl-` for chat, `cmpl-` for completions) and the provider's
  response id (Anthropic's message id, Gemini's responseId), or one the gateway makes up when the
  provider gives none. An OpenAI-compatible provider already sends ids of that shape: they are kept
  as sent;
- `object` is always `chat.completion.chunk`;
- `created` is the provider's timestamp when it sends one, else the request's time;
- `model` is the model the provider says answered, else the one asked for.

The builders are plain dict literals: they cost what writing the dict by hand did (the per-chunk path).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from .ids import random_id

CHUNK_OBJECT = "chat.completion.chunk"
ID_PREFIXES = {"chat": "chatcmpl-", "completions": "cmpl-"}
# The `object` of a whole (non-streamed) answer, and of a streamed chunk, as each endpoint's client gets it.
COMPLETION_OBJECTS = {"chat": "chat.completion", "completions": "text_completion"}
TEXT_COMPLETION_OBJECT = "text_completion"

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class FunctionDelta(TypedDict, total=False):
    name: str
    arguments: str


class ToolCallDelta(TypedDict, total=False):
    index: int
    id: str
    type: str
    function: FunctionDelta
    extra_content: dict[str, Any]  # Gemini's thought signature, to be sent back on the next turn


class Delta(TypedDict, total=False):
    role: str
    content: str | None
    reasoning_content: str
    reasoning_signature: str  # Anthropic: the signature that closes a thinking block
    redacted_thinking: str  # Anthropic: a redacted thinking block's data
    refusal: str
    tool_calls: list[ToolCallDelta]


class Choice(TypedDict):
    index: int
    delta: Delta
    logprobs: Any
    finish_reason: str | None


class Chunk(TypedDict):
    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: NotRequired[dict[str, Any] | None]


# What one step of the chain passes on: the chunks of one upstream read, in order, never empty. A stage
# works through a batch at once and passes what it made of it as one batch (or nothing, when it dropped
# every chunk); it never waits for more chunks to fill one, so a batch holds nothing back.
Batch = list[Chunk]


def response_id_of(endpoint: str, provider_id: str | None = None) -> str:
    """The rule for every provider that does not send OpenAI's ids: the endpoint's prefix and the
    provider's response id, or a made-up one."""
    return ID_PREFIXES[endpoint] + (provider_id or random_id())


def choice(index: int, delta: Delta, finish_reason: str | None = None) -> Choice:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


class Envelope:
    """The `id`, `created` and `model` every chunk of one answer carries; an adapter updates them from
    what the provider says (`answered_by`, `identify`), and builds its chunks with them."""

    __slots__ = ("endpoint", "id", "created", "model")

    def __init__(self, endpoint: str, created: int, model: str, id: str | None = None) -> None:
        self.endpoint = endpoint
        self.id = id if id is not None else response_id_of(endpoint)
        self.created = created
        self.model = model

    def identify(self, provider_id: str | None) -> None:
        """The provider's own response id (None: a made-up one)."""
        self.id = response_id_of(self.endpoint, provider_id)

    def chunk(self, choices: list[Choice]) -> Chunk:
        return {"id": self.id, "object": CHUNK_OBJECT, "created": self.created, "model": self.model,
                "choices": choices}

    def delta(self, index: int, delta: Delta, finish_reason: str | None = None) -> Chunk:
        """A chunk of one choice's delta (and its finish reason)."""
        return {"id": self.id, "object": CHUNK_OBJECT, "created": self.created, "model": self.model,
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    def finish(self, index: int, finish_reason: str, delta: Delta | None = None) -> Chunk:
        """The chunk that ends a choice: OpenAI sends it with an empty delta, after the content."""
        return self.delta(index, delta if delta is not None else {}, finish_reason)

    def usage(self, usage: dict[str, Any] | None) -> Chunk:
        """The `choices: []` chunk that carries the token counts, last in the stream."""
        return {"id": self.id, "object": CHUNK_OBJECT, "created": self.created, "model": self.model,
                "choices": [], "usage": usage}

    def stamp(self, chunk: dict[str, Any]) -> None:
        """Puts this envelope on a chunk that came from elsewhere (an OpenAI-compatible provider's)."""
        chunk["id"] = self.id
        chunk["object"] = CHUNK_OBJECT
        chunk["created"] = self.created
        chunk["model"] = self.model

    @classmethod
    def of(cls, endpoint: str, chunk: Chunk, created: int, model: str) -> Envelope:
        """The envelope a chunk carries (`created` and `model` when it has none), for a middleware
        that adds chunks of its own to the answer."""
        upstream_created = chunk.get("created")
        return cls(endpoint, upstream_created if isinstance(upstream_created, int) else created,
                   str(chunk.get("model") or model), str(chunk.get("id") or response_id_of(endpoint)))
