"""What one client request carries through the provider adapter and the middleware chain."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .config import ClientKey, ProviderConfig
from .ids import random_id


@dataclass(slots=True)  # many per-chunk reads, and one per open stream: no __dict__
class RequestContext:
    endpoint: str  # "chat" or "completions"
    # the validated client body; emptied once the answer's first content arrived (failover.answer): no try
    # sends it again then, and a stream does not hold its prompt for the rest of its life
    body: dict[str, Any]
    provider: ProviderConfig
    model: str  # the model name the provider knows
    requested_model: str  # what the client wrote
    stream: bool
    include_usage: bool  # the chain must end with a usage chunk
    request_id: str = field(default_factory=random_id)
    created: int = field(default_factory=lambda: int(time.time()))
    choices: int = 1  # n: how many choices must each reach a finish reason
    # the (provider, model) targets to try in order; `provider` and `model` above are the one being tried
    candidates: list[tuple[ProviderConfig, str]] = field(default_factory=list)
    attempts: int = 0  # upstream tries made so far, retries and fallbacks included
    retries: int = 0  # of those, tries again at the same target after a failure (for the access log)
    moderation_actions: list[str] = field(default_factory=list)  # what moderate did beyond blocks (redactions)
    # (provider, seconds to its response headers) for each upstream call made: timed where the call is made,
    # since an aiohttp TraceConfig would cost every request a dozen trace events
    upstream_first_bytes: list[tuple[str, float]] = field(default_factory=list)
    chunks_in: int = 0  # chunks the answering target has sent into the middleware chain (for the metrics)
    session: aiohttp.ClientSession | None = None  # the app's pooled session, for calls a middleware makes
    client: ClientKey | None = None  # the caller's key; None when the gateway serves without keys
    # each middleware's own settings, by its name (its parsed providers.yaml section, or what the app
    # gives it: the limit backend for ratelimit); read by that middleware only
    settings: dict[str, object] = field(default_factory=dict)
    usage: dict[str, Any] | None = None  # the provider's latest token counts, recorded by normalize
    response_headers: dict[str, str] = field(default_factory=dict)  # added to the 200 (x-ratelimit-*)

    @property
    def id_prefix(self) -> str:
        return "chatcmpl-" if self.endpoint == "chat" else "cmpl-"
