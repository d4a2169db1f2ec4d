"""The middleware chain between a provider adapter and the client.

A middleware is a plain async-generator function `(ctx, batches) -> batches` over OpenAI chat chunks,
passed in batches (one per upstream read, so that a read's chunks cross each stage in one step), declared by the `SPEC` its module exports (gateway/pipeline/spec.py). `Chain` links them in the
configured order, then the AUTOMATIC ones (not listed: they follow every listed stage), leaves out a
stage whose spec says it is not active for the request, and closes every stage explicitly, innermost last, so that an early exit (client
gone, error, cancellation) closes the upstream at once rather than when the garbage collector gets to it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from ..chunks import Batch
from ..context import RequestContext
from . import coalesce, moderate, normalize, ratelimit
from .spec import Middleware, MiddlewareSpec

__all__ = ["AUTOMATIC", "MIDDLEWARES", "Chain", "Middleware", "MiddlewareSpec"]

# Every middleware `middlewares` may list, by name.
MIDDLEWARES: dict[str, MiddlewareSpec] = {spec.name: spec for spec in (normalize.SPEC, ratelimit.SPEC, moderate.SPEC)}
# Added by the chain after every listed stage, to the requests their `active` picks; never listed.
# coalesce: after moderate, which must see the original deltas, and on any config.
AUTOMATIC: tuple[MiddlewareSpec, ...] = (coalesce.SPEC,)


class Chain:
    def __init__(self, ctx: RequestContext, source: AsyncGenerator[Batch, None], names: tuple[str, ...]) -> None:
        self.stages: list[AsyncGenerator[Batch, None]] = [source]
        for spec in (*(MIDDLEWARES[name] for name in names), *AUTOMATIC):
            if spec.active is None or spec.active(ctx):
                self.stages.append(spec.run(ctx, self.stages[-1]))
        self.output: AsyncIterator[Batch] = self.stages[-1]

    def __aiter__(self) -> AsyncIterator[Batch]:
        return self.output

    async def aclose(self) -> None:
        for stage in reversed(self.stages):
            await stage.aclose()
