"""Retries and fallbacks before the first byte: the chain's source, trying a request's targets in order.

A target is tried up to its provider's `retry.attempts` times, with exponential backoff and jitter,
then the next target of the route. A try counts as started only when a chunk with content arrives
(text, reasoning, a tool call, a finish reason or usage); what came before it (a role chunk) is held
back, so that "200, then an error event" is retried like an HTTP error and the client sees one
stream, from whichever target answered. A non-stream answer is held whole, so any failure is retried.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import aiohttp

from .chunks import Batch, Chunk
from .config import RetryPolicy
from .context import RequestContext
from .errors import GatewayError, Retry
from .health import Health
from .logfmt import escape
from .providers import stream_chunks

log = logging.getLogger("gateway.failover")


def retry_after(error: GatewayError) -> float | None:
    """Seconds the provider asked us to wait (`retry-after-ms`, or `retry-after` in seconds or as a date)."""
    headers = {k.lower(): v for k, v in error.headers.items()}
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None
    return None


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with equal jitter: after try `attempt` (1-based), between half and all of the step."""
    step = min(maximum, initial * 2.0 ** (attempt - 1))
    return step * random.uniform(0.5, 1.0)


@dataclass(frozen=True)
class RetryDecision:
    """What the failover loop does after a failed try."""

    action: Retry  # "same": try this target again after `delay`; "next": the next target; "never": raise
    delay: float = 0.0  # seconds before the next try at the same target
    cool_for: float = 0.0  # a cooldown the provider asked for (a retry-after beyond retry_after_max)


def should_retry(error: GatewayError, attempt: int, policy: RetryPolicy) -> RetryDecision:
    """The decision after try `attempt` (1-based) at one target failed with `error`, from the rule the
    error carries: a retry-after longer than `policy.retry_after_max` moves on at once and cools the
    provider down for that long; the last of `policy.attempts` moves on; otherwise back off and retry."""
    if error.retry == "never":
        return RetryDecision("never")
    wait = retry_after(error)
    too_long = wait is not None and wait > policy.retry_after_max
    cool_for = wait if too_long and wait is not None else 0.0
    if error.retry == "next" or too_long or attempt >= policy.attempts:
        return RetryDecision("next", cool_for=cool_for)
    delay = max(backoff(attempt, policy.backoff_initial, policy.backoff_max), wait or 0.0)
    return RetryDecision("same", delay=delay)


def _has_content(chunk: Chunk) -> bool:
    if chunk.get("usage"):
        return True
    for choice in chunk.get("choices") or ():
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta")
        if delta and any(value for key, value in delta.items() if key != "role"):
            return True
    return False


async def _until_content(batches: AsyncIterator[Batch], whole: bool) -> Batch:
    """The chunks up to and including the first batch with content; with `whole`, all of them."""
    held: Batch = []
    async for batch in batches:
        held += batch
        if not whole and any(map(_has_content, batch)):
            break
    return held


def _all_cooling(ctx: RequestContext, health: Health) -> GatewayError:
    wait = min(health.cooling_for(provider) for provider, _ in ctx.candidates)
    names = ", ".join(dict.fromkeys(provider.name for provider, _ in ctx.candidates))
    return GatewayError(
        503,
        f"no provider for '{ctx.requested_model}' can be tried now: {names} failed repeatedly and "
        f"cool(s) down for {math.ceil(wait)} s more",
        type="service_unavailable",
        code="no_provider_available",
        headers={"Retry-After": str(max(1, math.ceil(wait)))},
    )


async def answer(ctx: RequestContext, session: aiohttp.ClientSession, health: Health) -> AsyncGenerator[Batch, None]:
    """The first target's answer that starts; the last failure (status kept) when none does."""
    last_error: GatewayError | None = None
    for provider, model in ctx.candidates:
        if health.cooling_for(provider):
            continue
        ctx.provider, ctx.model = provider, model
        policy = provider.retry
        for attempt in range(1, policy.attempts + 1):
            ctx.attempts += 1
            chunks = stream_chunks(ctx, session)
            try:
                held = await _until_content(chunks, whole=not ctx.stream)
            except GatewayError as error:
                await chunks.aclose()
                decision = should_retry(error, attempt, policy)
                if decision.action == "never":
                    raise  # the request itself is at fault: another try would fail the same way
                last_error = error
                if error.counts_against_health:
                    health.failed(provider, error.code or str(error.status), cool_for=decision.cool_for)
                if decision.action == "next" or health.cooling_for(provider):
                    log.info("request %s: %s/%s failed (%s) on try %d; giving up on this target", ctx.request_id,
                             provider.name, escape(model), error.code, attempt)
                    break
                log.info("request %s: %s/%s failed (%s) on try %d; retrying in %.2f s", ctx.request_id,
                         provider.name, escape(model), error.code, attempt, decision.delay)
                ctx.retries += 1
                await asyncio.sleep(decision.delay)
                continue
            except BaseException:
                await chunks.aclose()
                raise
            health.succeeded(provider)
            ctx.body = {}  # no other try will be made: the prompt is let go (RequestContext.body)
            try:  # a try/finally, not contextlib.aclosing: the same close, at a third of the cost
                ctx.chunks_in += len(held)
                if held:
                    yield held
                del held  # not kept for the stream's life
                try:
                    async for batch in chunks:
                        ctx.chunks_in += len(batch)  # counted here, where every chunk passes anyway: no layer of its own
                        yield batch
                        del batch  # not held while the stream waits for the next
                except GatewayError as error:
                    if error.counts_against_health:
                        health.failed(provider, error.code or str(error.status))
                    raise
            finally:
                await chunks.aclose()
            return
    if last_error is None:
        raise _all_cooling(ctx, health)
    if ctx.attempts > 1:
        raise last_error.with_message(f"{last_error.message} (after {ctx.attempts} tries)")
    raise last_error
