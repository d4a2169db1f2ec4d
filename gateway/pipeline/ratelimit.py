"""Per-key limits around the stream: admission before the first upstream call, settlement at its end.

The chain is lazy, so the admission below runs on the first pull, before the provider is called: a 429
raised here becomes the response's real status. The `finally` runs on every ending (done, upstream
error, timeout, client gone, cancellation, shutdown) because Chain.aclose closes every stage.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ..chunks import Batch
from ..context import RequestContext
from ..limits.base import LimitBackend
from .spec import MiddlewareSpec

CHARS_PER_TOKEN = 4
DEFAULT_COMPLETION_TOKENS = 1024  # the estimate of an answer's length when max_tokens is not given


async def ratelimit(ctx: RequestContext, batches: AsyncIterator[Batch]) -> AsyncGenerator[Batch, None]:
    limiter, key = ctx.settings.get("ratelimit"), ctx.client
    if not isinstance(limiter, LimitBackend) or key is None or not key.limits:
        async for batch in batches:
            yield batch
            del batch  # not held while the stream waits for the next
        return
    admission = await limiter.admit(key, estimate_tokens(ctx.body, ctx.choices))
    ctx.response_headers.update(admission.headers)
    try:
        async for batch in batches:
            yield batch
            del batch  # not held while the stream waits for the next
    finally:
        await limiter.settle(admission, used_tokens(ctx.usage))


# It settles with the token counts normalize records on the context.
SPEC = MiddlewareSpec("ratelimit", ratelimit, after=("normalize",))


def estimate_tokens(body: dict[str, Any], choices: int = 1) -> int:
    """The prompt's characters / 4, plus max_tokens (else DEFAULT_COMPLETION_TOKENS) for each choice."""
    chars = _text_length(body.get("messages")) + _text_length(body.get("prompt"))
    completion = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_COMPLETION_TOKENS
    return -(-chars // CHARS_PER_TOKEN) + completion * max(1, choices)


def _text_length(value: object) -> int:
    """Characters of every string inside messages or a prompt (text parts, tool arguments, names)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_length(item) for name, item in value.items() if name not in _MEDIA)
    return 0


_MEDIA = frozenset({"image_url", "input_audio", "file"})  # base64 data: not text the model reads as tokens


def used_tokens(usage: dict[str, Any] | None) -> int | None:
    if not usage:
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if (isinstance(prompt, int) and isinstance(completion, int)
            and not isinstance(prompt, bool) and not isinstance(completion, bool)):
        return prompt + completion
    return None
