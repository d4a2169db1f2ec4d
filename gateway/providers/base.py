"""The adapter contract: a wire format is one module holding one adapter object, listed in `ADAPTERS`.

An HTTP adapter (`HttpAdapter`) is driven by `stream_chunks` (providers/__init__.py), per request:

    state = adapter.new_state(ctx)                  # its explicit parser state: `malformed`, `done`
    request = adapter.build_request(ctx)            # the upstream call: url, headers, body bytes
    POST request    -> a non-200 answer: adapter.http_error(...), or else the shared mapping (upstream.py)
                    -> a Content-Type that is not adapter.content_type: a bad-stream error
    decoder = adapter.decoder(provider)             # SSE unless the format frames its events otherwise
    for each read of the body, for each event the decoder cut from it:
        adapter.parse_event(event, state)           # pure: one event -> OpenAI chat chunks
        stop once state.done                        # the provider's end-of-stream event
    (the chunks of one read go to the middlewares as one batch)
    adapter.finish(state)                           # the last chunks; raises when the stream was cut short

A local adapter (`LocalAdapter`, the demo model) makes the answer itself: `stream(ctx)` yields the same
chunks, with no request, decoder or state for the host to keep.

Both declare `kind` (what providers.yaml writes) and `options`: the provider keys only this kind takes,
which config validation reads (a key of another kind is refused, naming the kinds that take it).
Chunks are built with gateway/chunks.py's `Envelope`, so that every provider's ids look alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar

from ..sse import SSEDecoder
from ..upstream import FramingError, UpstreamRequest

if TYPE_CHECKING:
    from ..chunks import Chunk
    from ..config import ProviderConfig
    from ..context import RequestContext
    from ..errors import GatewayError

__all__ = ["AdapterState", "FrameDecoder", "FramingError", "HttpAdapter", "LocalAdapter", "Option",
           "UpstreamRequest"]

StateT = TypeVar("StateT", bound="AdapterState")
EventT = TypeVar("EventT")
EventT_co = TypeVar("EventT_co", covariant=True)


class AdapterState(Protocol):
    """What the host reads on an adapter's state; the rest is the adapter's own."""

    malformed: int  # events that were not what the format promises: skipped and counted (on_malformed)
    done: bool  # the provider's end-of-stream event came: the stream ends there, whether or not the connection does


class FrameDecoder(Protocol[EventT_co]):
    """Cuts the body into events, across reads split anywhere; raises FramingError (or SSEDecodeError)
    for bytes that break the framing, which ends the stream with a bad-stream error."""

    def feed(self, data: bytes) -> Sequence[EventT_co]: ...


@dataclass(frozen=True)
class Option:
    """A provider key only some kinds take. `key` is also the ProviderConfig field it sets, whose
    default is the documented one; a number is refused below `minimum`."""

    key: str
    type: type[bool] | type[float]
    minimum: float | None = None


class _Kind(ABC):
    kind: ClassVar[str]
    options: ClassVar[tuple[Option, ...]] = ()
    remote: ClassVar[bool]  # whether providers of this kind need a base_url (and may have an api_key)


class HttpAdapter(_Kind, Generic[StateT, EventT]):
    remote = True
    content_type: ClassVar[str] = "text/event-stream"  # the prefix the answer's Content-Type must have

    @abstractmethod
    def new_state(self, ctx: RequestContext) -> StateT: ...

    @abstractmethod
    def build_request(self, ctx: RequestContext) -> UpstreamRequest:
        """Raises GatewayError (400) for a request this format cannot carry."""

    @abstractmethod
    def parse_event(self, event: EventT, state: StateT) -> Sequence[Chunk]:
        """Pure but for `state`; raises GatewayError for an error the provider sent in its stream."""

    @abstractmethod
    def finish(self, state: StateT) -> Sequence[Chunk]:
        """The stream's body ended (or its end event came): the last chunks, or an error if it was cut."""

    def decoder(self, provider: ProviderConfig) -> FrameDecoder[EventT]:
        return SSEDecoder(provider.max_event_bytes)  # type: ignore[return-value]  # EventT is SSEEvent here

    def http_error(self, provider: ProviderConfig, status: int, body: bytes,
                   headers: Mapping[str, str]) -> GatewayError | None:
        """This format's reading of an error answer (status, up to 64 KiB of body, headers); None leaves
        it to the shared mapping, upstream.http_error."""
        return None


class LocalAdapter(_Kind):
    remote = False

    @abstractmethod
    def stream(self, ctx: RequestContext) -> AsyncGenerator[Chunk, None]: ...
