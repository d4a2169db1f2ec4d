"""What a middleware declares about itself, in its own module as `SPEC`.

gateway/pipeline/__init__.py builds the chain from the specs, and config validation reads them: the
names `middlewares` may list, the order they must keep, and the providers.yaml section each one owns.
A middleware's parsed section reaches it as `ctx.settings[name]`. A middleware the chain adds by itself
(pipeline/__init__.py's AUTOMATIC: never listed, always last) is declared with the same shape.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..chunks import Batch

if TYPE_CHECKING:
    from ..config import Validator
    from ..context import RequestContext

# An async-generator function over batches of OpenAI chat chunks (gateway/chunks.py's Batch, one per
# upstream read): (ctx, batches) -> batches. It yields only non-empty batches. An async generator, not
# any iterator: Chain closes every stage with aclose().
Middleware = Callable[["RequestContext", AsyncIterator[Batch]], AsyncGenerator[Batch, None]]


@dataclass(frozen=True)
class ConfigSection:
    key: str  # its top-level key in providers.yaml
    parse: Callable[[Validator, Any], object]  # the raw value -> settings; each problem names its key path
    default: Callable[[], object]  # the settings when the section is absent


@dataclass(frozen=True)
class MiddlewareSpec:
    name: str  # as listed in providers.yaml `middlewares`
    run: Middleware
    after: tuple[str, ...] = ()  # middlewares that must be listed, and listed before this one
    section: ConfigSection | None = None  # its own providers.yaml section, if it has settings
    # None: the stage runs on every request. Else Chain leaves it out of a request this says False for,
    # so that a middleware that is off for a request costs it nothing.
    active: Callable[[RequestContext], bool] | None = None
