"""Where a resumable stream's events wait for a client that may come back: the one shape both
backends (memory: this instance; redis: any instance) have.

The instance that reads the upstream (the owner) opens a stream, appends each SSE event it sends, in
order, numbered from 1, and finishes it after the last one ([DONE], or an error event then [DONE]).
A client that comes back, on any instance, reads the events after the last one it had, then the live
ones, until the stream finishes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StreamMeta:
    stream_id: str  # unguessable, url-safe
    key_id: str | None  # the client key that started it; None on open access
    token_sha256: str  # hex SHA-256 of the resume token given to the first response
    owner: str  # the instance that reads the upstream
    created: float  # wall-clock seconds


TOMBSTONE_SECONDS = 600.0  # how long a stream that is over is still known as such: 410 for a late client, not 404


class StreamExpired(Exception):
    """Unknown, dropped (grace passed, cancelled) or past its byte cap: no longer resumable (410)."""


class ResumeUnavailable(Exception):
    """The store's backend failed (Redis down): the stream may well be there, but cannot be read now (503)."""


class OwnerLost(Exception):
    """The owning instance stopped before the stream finished: the events stored are all there is."""


class ResumeStore(Protocol):
    async def start(self) -> None:
        """Connects and starts the store's own background work (one task per instance, not per stream)."""

    async def close(self) -> None:
        """Stops that work. The streams this instance owns and has not finished are over for it: the
        memory store drops them (their events go with it); the redis store leaves them in Redis without
        an owner, so that a reader elsewhere gets what is stored, then OwnerLost."""

    async def open(self, meta: StreamMeta, on_cancel: Callable[[], None]) -> None:
        """Registers a stream this instance owns; `on_cancel` runs here when any instance cancels it."""

    async def append(self, stream_id: str, seq: int, event: bytes) -> bool:
        """Stores event `seq` (1, 2, ...), the exact bytes sent to the client. False when the stream is over
        its own byte cap or the instance's total and stops being resumable (then it is dropped)."""

    async def finish(self, stream_id: str) -> None:
        """No more events: kept for the grace period, so that a client that comes back can still replay."""

    async def drop(self, stream_id: str) -> None:
        """Frees the stream now: readers get StreamExpired."""

    async def meta(self, stream_id: str) -> StreamMeta | None:
        """The stream's metadata, None when it is unknown. A dropped or expired stream's is still given for
        TOMBSTONE_SECONDS (its events raise StreamExpired), so that a late client is told 410, not 404.
        Raises ResumeUnavailable when the backend fails."""

    async def has_readers(self, stream_id: str) -> bool:
        """Whether a resumed client is reading it now, on any instance (the owner's grace check)."""

    def events(self, stream_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """The events after `after`, then the live ones until the stream finishes. Raises StreamExpired
        (at once or when it is dropped meanwhile), OwnerLost (the owner stopped before finishing) or
        ResumeUnavailable (the backend failed)."""

    async def cancel(self, stream_id: str) -> bool:
        """Signals the stream's owner, wherever it is, to stop it (its `on_cancel` runs there; the owner
        ends the stream, its readers get the end). False when it is unknown or over. Raises
        ResumeUnavailable when the backend fails."""
