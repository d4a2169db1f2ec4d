"""One chunk shape whatever the provider.

- one `id`, `object`, `created` and `model` on every chunk (the upstream's first values, else made up
  by gateway/chunks.py's rule);
- every choice has `index`, `delta`, `logprobs` and `finish_reason`; the first delta of each choice
  carries `role: assistant`, later ones do not (Perplexity repeats it);
- reasoning arrives as `reasoning_content` whether the provider said `reasoning` (Groq, OpenRouter)
  or `reasoning_content` (DeepSeek); Mistral's content arrays become text and reasoning;
- tool calls get dense indexes 0..n-1 in order of appearance, with `id`, `type` and `function.name`
  on the first delta of each call and argument fragments passed on as they come;
- null and empty fields are dropped from deltas, and chunks left with nothing to say are dropped;
- usage wherever it came (a `choices: []` chunk, the finish chunk, every chunk, `x_groq.usage`) is held
  back and sent once, in a last `choices: []` chunk, when the client asked for it;
- one finish reason per choice; extras that clients use (`citations`, `system_fingerprint`...) stay.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ..chunks import Batch, Chunk, Envelope
from ..context import RequestContext
from .spec import MiddlewareSpec

_FINISH_REASONS = {"eos": "stop", "end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls",
                   "max_tokens": "length"}


class _Choice:
    __slots__ = ("role_sent", "finished", "tool_indexes")

    def __init__(self) -> None:
        self.role_sent = False
        self.finished = False
        self.tool_indexes: dict[object, int] = {}  # upstream index (or id) -> dense index


class _Normalizer:
    __slots__ = ("ctx", "envelope", "choices", "usage")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx
        self.envelope: Envelope | None = None  # the first chunk's
        self.choices: dict[int, _Choice] = {}
        self.usage: dict[str, Any] | None = None

    def _stamp(self, chunk: dict[str, Any]) -> None:
        envelope = self.envelope
        if envelope is None:
            ctx = self.ctx
            upstream_id = chunk.get("id")
            created = chunk.get("created")
            model = chunk.get("model")
            envelope = self.envelope = Envelope(
                ctx.endpoint, created if isinstance(created, int) and not isinstance(created, bool) else ctx.created,
                model if isinstance(model, str) and model else ctx.model, str(upstream_id) if upstream_id else None)
        envelope.stamp(chunk)

    def apply(self, provider_chunk: Chunk) -> Chunk | None:
        # What a provider sent, unchecked until this method has checked it: read as a plain dict.
        chunk: dict[str, Any] = provider_chunk  # type: ignore[assignment]
        envelope = self.envelope
        choices = chunk.get("choices")
        if (envelope is not None and choices.__class__ is list and len(choices) == 1 and chunk.get("usage") is None
                and "x_groq" not in chunk):
            # Most chunks: more text of a choice already begun, nothing else (OpenAI adds `"usage": null` to
            # every chunk once usage is asked for). What the general path below does with one: its delta kept
            # as it is, no finish reason, logprobs null when absent, no usage field, stamped.
            choice = choices[0]
            if choice.__class__ is dict:
                delta = choice.get("delta")
                index = choice.get("index")
                state = self.choices.get(index) if index.__class__ is int else None
                if (state is not None and state.role_sent and delta.__class__ is dict and len(delta) == 1
                        and (text := delta.get("content")).__class__ is str and text
                        and not choice.get("finish_reason")):
                    choice["finish_reason"] = None
                    if "logprobs" not in choice:
                        choice["logprobs"] = None
                    chunk.pop("usage", None)
                    envelope.stamp(chunk)
                    return provider_chunk
        usage = chunk.pop("usage", None)
        extra = chunk.get("x_groq")
        if isinstance(extra, dict) and "usage" in extra:
            groq_usage = extra.pop("usage")
            usage = usage or groq_usage
        if usage:
            self.usage = usage  # the latest counts win: some providers repeat cumulative usage
            self.ctx.usage = usage  # for the ratelimit middleware, even when the client did not ask for it
        kept = []
        for choice in chunk.get("choices") or ():
            if self._choice(choice):
                kept.append(choice)
        if not kept:
            return None
        chunk["choices"] = kept
        self._stamp(chunk)
        return provider_chunk

    def _choice(self, choice: dict[str, Any]) -> bool:
        index = choice.get("index")
        if not isinstance(index, int):
            index = choice["index"] = 0
        state = self.choices.get(index)
        if state is None:
            state = self.choices[index] = _Choice()
        raw = choice.get("delta")
        delta = _clean_delta(raw) if isinstance(raw, dict) else {}
        if "tool_calls" in delta:
            delta["tool_calls"] = self._tool_calls(state, delta["tool_calls"])
            if not delta["tool_calls"]:
                del delta["tool_calls"]
        finish = choice.get("finish_reason")
        if finish:
            if state.finished:
                finish = None  # a repeated finish reason (OpenRouter) is dropped
            else:
                state.finished = True
                finish = _FINISH_REASONS.get(finish, finish)
        else:
            finish = None
        if not state.role_sent:
            if not delta and finish is None and not (isinstance(raw, dict) and "role" in raw):
                return False
            state.role_sent = True
            if "content" not in delta and "tool_calls" not in delta:
                delta["content"] = ""
            delta = {"role": "assistant", **delta}
        elif not delta and finish is None and choice.get("logprobs") is None:
            return False
        choice["delta"] = delta
        choice["finish_reason"] = finish
        if "logprobs" not in choice:
            choice["logprobs"] = None
        return True

    def _tool_calls(self, state: _Choice, calls: object) -> list[Any]:
        if not isinstance(calls, list):
            return []
        out = []
        for call in calls:
            if not isinstance(call, dict):
                continue
            key = call.get("index")
            if key is None:  # some providers omit the index: a call with an id opens a new one
                key = call.get("id") or (next(reversed(state.tool_indexes)) if state.tool_indexes else 0)
            dense = state.tool_indexes.get(key)
            if dense is None:
                dense = state.tool_indexes[key] = len(state.tool_indexes)
                call.setdefault("type", "function")
                function = call.setdefault("function", {})
                function.setdefault("arguments", "")
                if not call.get("id"):
                    call["id"] = f"call_{uuid.uuid4().hex[:24]}"
            call["index"] = dense
            out.append(call)
        return out

    def usage_chunk(self) -> Chunk:
        ctx = self.ctx
        envelope = self.envelope or Envelope(ctx.endpoint, ctx.created, ctx.model)
        return envelope.usage(self.usage)


def _clean_delta(delta: dict[str, Any]) -> dict[str, Any]:
    if len(delta) == 1 and type(content := delta.get("content")) is str and content:
        return delta  # most deltas: one piece of text, nothing to clean
    out = {}
    part_reasoning = ""
    for key, value in delta.items():
        if value is None or (not value and isinstance(value, (str, list, dict))) or key in _SKIPPED_DELTA_KEYS:
            continue
        if key == "content" and isinstance(value, list):
            text, part_reasoning = _split_content_parts(value)
            if text:
                out["content"] = text
            continue
        out[key] = value
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if isinstance(reasoning, str) and reasoning or part_reasoning:
        out["reasoning_content"] = (reasoning if isinstance(reasoning, str) else "") + part_reasoning
    return out


_SKIPPED_DELTA_KEYS = frozenset({"role", "reasoning", "reasoning_content"})


def _split_content_parts(parts: list[Any]) -> tuple[str, str]:
    """Mistral's content arrays: `text` parts are content, `thinking` parts (themselves arrays) reasoning."""
    text, reasoning = [], []
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text.append(part.get("text") or "")
        elif kind == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                reasoning.append(inner)
            elif isinstance(inner, list):
                reasoning.extend(p.get("text") or "" for p in inner if isinstance(p, dict))
    return "".join(text), "".join(reasoning)


async def normalize(ctx: RequestContext, batches: AsyncIterator[Batch]) -> AsyncGenerator[Batch, None]:
    state = _Normalizer(ctx)
    apply = state.apply
    async for batch in batches:
        if len(batch) == 1:  # one event a read, the paced case: no new list
            chunk = apply(batch[0])
            if chunk is not None:
                batch[0] = chunk
                del chunk
                yield batch
        else:
            kept = [chunk for chunk in map(apply, batch) if chunk is not None]
            if kept:
                yield kept
            del kept
        del batch  # not held while the stream waits for the next read
    if ctx.include_usage and state.usage is not None:
        yield [state.usage_chunk()]


SPEC = MiddlewareSpec("normalize", normalize)
