"""The middleware chain between a provider adapter and the client.

A middleware is a plain async-generator function `(ctx, chunks) -> chunks` over OpenAI chat chunks.
`Chain` links them in the configured order and closes every stage explicitly, innermost last, so
that an early exit (client gone, error, cancellation) closes the upstream at once rather than when
the garbage collector gets to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from ..context import RequestContext
from .moderate import moderate
from .normalize import normalize
from .ratelimit import ratelimit

Middleware = Callable[[RequestContext, AsyncIterator[dict]], AsyncIterator[dict]]

MIDDLEWARES: dict[str, Middleware] = {"normalize": normalize, "ratelimit": ratelimit, "moderate": moderate}


class Chain:
    def __init__(self, ctx: RequestContext, source: AsyncIterator[dict], names: tuple[str, ...]) -> None:
        self.stages = [source]
        for name in names:
            self.stages.append(MIDDLEWARES[name](ctx, self.stages[-1]))
        self.output: AsyncIterator[dict] = self.stages[-1]

    def __aiter__(self) -> AsyncIterator[dict]:
        return self.output

    async def aclose(self) -> None:
        for stage in reversed(self.stages):
            await stage.aclose()
