"""Content moderation inside the stream: the configured rules (gateway/moderation.py) and an optional
external moderation service, on the request and on the answer as it flows.

- The request: before the upstream is called (the chain is lazy), every message's text (the prompt on
  /completions) is checked; any rule match, or a flagged service verdict, is a 400 `content_filter`
  (gateway/moderation_request.py).
- The answer: one scanner per choice and field (content, reasoning, each tool call's arguments). Text
  that cannot start a match flows on at once; the few characters that could are held until they are
  decided. A model writes one field at a time, so when text arrives for another field (or the choice
  finishes) the held text of the previous one is released first, in a delta of its own field.
- A `block` match ends its choice: what was safe before the match, then `finish_reason:
  content_filter`. Other choices (n > 1) go on; once every choice has ended, the upstream is closed at
  once, so after a block there are no final token counts: the usage chunk is not sent.
- With a service, the answer is released window by window: each `window_chars` of text (and the rest
  at the end) is checked before it reaches the client; a flagged window ends every open choice with
  `content_filter`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Literal

import aiohttp

from ..chunks import Batch, Choice, Chunk, Delta, Envelope
from ..context import RequestContext
from ..moderation import Rule, Scanner
from ..moderation_config import ModerationConfig, ModerationService, parse_moderation
from ..moderation_request import CONTENT_FILTERED, check_request
from ..moderation_service import is_flagged
from .spec import ConfigSection, MiddlewareSpec

log = logging.getLogger("gateway")

TextField = Literal["reasoning_content", "content", "refusal"]  # the delta fields the rules scan
_REASONING_FIELDS: tuple[TextField, ...] = ("reasoning_content",)
# a refusal is text the client reads, in place of content
_ANSWER_FIELDS: tuple[TextField, ...] = ("content", "refusal")
_TEXT_FIELDS = _REASONING_FIELDS + _ANSWER_FIELDS
# what a choice's scanner reads: a text field, or the arguments of the tool call of this index
ScanKey = TextField | int


def _text_fields(settings: ModerationConfig) -> tuple[TextField, ...]:
    """The delta fields the rules scan, in the order a model writes them."""
    return (_REASONING_FIELDS if settings.reasoning else ()) + (_ANSWER_FIELDS if settings.output else ())


async def moderate(ctx: RequestContext, batches: AsyncIterator[Batch]) -> AsyncGenerator[Batch, None]:
    settings = ctx.settings.get("moderate")
    if not isinstance(settings, ModerationConfig) or not settings.active:
        async for batch in batches:
            yield batch
            del batch  # not held while the stream waits for the next
        return
    if settings.input:
        await check_request(ctx, settings)
    output = _Output(ctx, settings) if settings.rules and (settings.output or settings.reasoning
                                                           or settings.tool_arguments) else None
    service = settings.service if settings.output else None
    if output is None and service is None:
        async for batch in batches:
            yield batch
            del batch  # not held while the stream waits for the next
        return
    try:
        if service is None:  # the rules only (the usual case): a batch in, its moderated chunks out
            assert output is not None
            apply = output.apply
            async for batch in batches:
                moderated: Batch = []
                for chunk in batch:
                    moderated += apply(chunk)
                    if output.done:
                        break
                if moderated:
                    yield moderated
                if output.done:
                    break
                del batch, chunk, moderated  # not held while the stream waits for the next
            moderated = output.end()
            if moderated:
                yield moderated
            return
        assert ctx.session is not None  # routes.py gives every request the app's session
        window = _Window(ctx, settings, service, ctx.session)
        # What a window releases goes out before the next check is awaited: never behind a service call.
        async for batch in batches:
            for chunk in batch:
                for piece in output.apply(chunk) if output is not None else (chunk,):
                    released = await window.add(piece)
                    if released:
                        yield released
                    if window.blocked:
                        return
                if output is not None and output.done:
                    break
            if output is not None and output.done:
                break
        for piece in output.end() if output is not None else ():
            released = await window.add(piece)
            if released:
                yield released
            if window.blocked:
                return
        released = await window.end()
        if released:
            yield released
    finally:
        if output is not None and output.redactions():
            ctx.moderation_actions.append("output_redact")


class _ChoiceState:
    __slots__ = ("scanners", "last", "ended")

    def __init__(self) -> None:
        self.scanners: dict[ScanKey, Scanner] = {}
        self.last: ScanKey | None = None  # the field that got text last: the only one that may hold some
        self.ended = False


class _Output:
    """The rules on the answer: chunks in, moderated chunks out (pure; no I/O)."""

    def __init__(self, ctx: RequestContext, settings: ModerationConfig) -> None:
        self.ctx = ctx
        self.rules = settings.rules
        self.fields = _text_fields(settings)
        self.tool_arguments = settings.tool_arguments
        self.choices: dict[int, _ChoiceState] = {}
        self.blocked = False
        self.ended = 0
        self.envelope: Envelope | None = None  # the answer's, for the chunks moderation adds

    def redactions(self) -> int:
        """Matches replaced by their mask so far, over every choice and field."""
        return sum(scanner.redactions for state in self.choices.values() for scanner in state.scanners.values())

    @property
    def done(self) -> bool:
        """Every choice has ended and one was blocked: nothing more from upstream may reach the client."""
        return self.blocked and self.ended >= self.ctx.choices

    def apply(self, chunk: Chunk) -> list[Chunk] | tuple[Chunk]:
        choices = chunk.get("choices")
        if not choices:
            return (chunk,)
        if self.envelope is None:
            self.envelope = Envelope.of(self.ctx.endpoint, chunk, self.ctx.created, self.ctx.model)
        if len(choices) == 1:  # the usual chunk: one choice writing more of the field it wrote last
            choice = choices[0]
            state = self.choices.get(choice.get("index", 0))
            delta = choice.get("delta")
            if (state is not None and not state.ended and delta and not choice.get("finish_reason")
                    and len(delta) == 1 and state.last is not None and state.last in delta):
                field = state.last
                text = delta[field]
                if text and text.__class__ is str:
                    scanner = state.scanners[field]
                    out = scanner.feed(text)
                    if scanner.blocked is None:
                        if out:
                            delta[field] = out
                            return (chunk,)
                        del delta[field]  # all of it held: the chunk says nothing yet
                        return (chunk,) if choice.get("logprobs") is not None else []
                    delta.pop(field, None)  # blocked: the slow path's ending, with what was released
                    if out:
                        delta[field] = out
                    return self._blocked_in(chunk, choice, state, scanner.blocked)
        before: list[Chunk] = []
        after: list[Chunk] = []
        kept: list[Choice] = []
        for choice in choices:
            index = choice.get("index", 0)
            state = self.choices.get(index)
            if state is None:
                state = self.choices[index] = _ChoiceState()
            elif state.ended:
                continue  # a blocked choice: nothing more of it is sent
            delta = choice.get("delta")
            rule = self._delta(state, delta) if delta else None
            if rule is not None:
                self._end(state, rule)
                choice["finish_reason"] = None
                if delta:
                    kept.append(choice)
                after.append(self._piece(index, {}, CONTENT_FILTERED))
                continue
            if choice.get("finish_reason"):
                held: Delta = {}
                if state.last is not None:
                    rule = self._release(state, state.last, held)
                    if rule is not None:  # the held text completed a match only once it ended
                        self._end(state, rule)
                        choice["finish_reason"] = CONTENT_FILTERED
                if not state.ended:
                    state.ended = True
                    self.ended += 1
                if held:  # released first, in a chunk of its own, after what this choice's delta says
                    before.append(self._piece(index, _merge(delta or {}, held), None))
                    choice["delta"] = {}
                kept.append(choice)
            elif delta or choice.get("logprobs") is not None:
                kept.append(choice)
        if not kept:
            return before + after
        chunk["choices"] = kept
        return [*before, chunk, *after] if before or after else (chunk,)

    def _blocked_in(self, chunk: Chunk, choice: Choice, state: _ChoiceState, rule: Rule) -> list[Chunk]:
        """apply's ending for its one choice blocked by `rule` in this chunk's delta (what was safe
        before the match is kept in it)."""
        self._end(state, rule)
        choice["finish_reason"] = None
        piece = self._piece(choice.get("index", 0), {}, CONTENT_FILTERED)
        return [chunk, piece] if choice.get("delta") else [piece]

    def end(self) -> list[Chunk]:
        """The upstream ended: text still held by choices that never finished."""
        out: list[Chunk] = []
        for index, state in self.choices.items():
            if state.ended or state.last is None:
                continue
            held: Delta = {}
            rule = self._release(state, state.last, held)
            if held:
                out.append(self._piece(index, held, None))
            if rule is not None:
                self._end(state, rule)
                out.append(self._piece(index, {}, CONTENT_FILTERED))
        return out

    def _delta(self, state: _ChoiceState, delta: Delta) -> Rule | None:
        """Moderates a delta in place; returns the rule that blocked its choice, if one did."""
        for field in self.fields:
            text = delta.get(field)
            if not text or text.__class__ is not str:
                continue
            if state.last == field:  # the common case: more of the same field
                scanner = state.scanners[field]
                rule = None
            else:
                scanner, rule = self._switch(state, field, delta)
            if rule is None:
                out = scanner.feed(text)
                if out:
                    delta[field] = out
                else:
                    del delta[field]
                rule = scanner.blocked
            if rule is not None:
                if scanner.blocked is None:
                    delta.pop(field, None)
                for later in self.fields[self.fields.index(field) + 1:]:
                    delta.pop(later, None)
                delta.pop("tool_calls", None)
                return rule
        calls = delta.get("tool_calls")
        if not calls or not self.tool_arguments or not isinstance(calls, list):
            return None
        for call in list(calls):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            text = function.get("arguments")
            if not text or not isinstance(text, str):
                continue
            scanner, rule = self._switch(state, call.get("index", 0), delta)
            if rule is None:
                function["arguments"] = scanner.feed(text)
                rule = scanner.blocked
                keep = calls.index(call) + 1
            else:
                keep = calls.index(call)
            if rule is not None:
                del calls[keep:]
                if not calls:
                    del delta["tool_calls"]
                return rule
        return None

    def _switch(self, state: _ChoiceState, key: ScanKey, delta: Delta) -> tuple[Scanner, Rule | None]:
        """The scanner for `key`. Text held by the field written before it is released into `delta` first;
        the rule is the one that ended the choice if that held text completed a block."""
        rule = self._release(state, state.last, delta) if state.last is not None and state.last != key else None
        state.last = key
        scanner = state.scanners.get(key)
        if scanner is None:
            scanner = state.scanners[key] = self.rules.scanner()
        return scanner, rule

    def _release(self, state: _ChoiceState, key: ScanKey, delta: Delta) -> Rule | None:
        """Ends the text of `key`, the field written last: what it held goes into `delta` under that field."""
        state.last = None
        scanner = state.scanners[key]
        text = scanner.finish()
        if text:
            _add(delta, key, text)
        return scanner.blocked

    def _end(self, state: _ChoiceState, rule: Rule) -> None:
        if not self.blocked:
            log.info("request %s blocked by moderation rule %d", self.ctx.request_id, rule.index)
        self.blocked = True
        state.ended = True
        self.ended += 1

    def _piece(self, index: int, delta: Delta, finish: str | None) -> Chunk:
        assert self.envelope is not None  # set by the first chunk with choices
        return self.envelope.delta(index, delta, finish)


def _add(delta: Delta, key: ScanKey, text: str) -> None:
    if isinstance(key, str):
        delta[key] = (delta.get(key) or "") + text  # normalize, which runs first, drops a None field
        return
    calls = delta.setdefault("tool_calls", [])
    for call in calls:
        if call.get("index") == key:
            function = call.setdefault("function", {})
            function["arguments"] = (function.get("arguments") or "") + text
            return
    calls.append({"index": key, "function": {"arguments": text}})


def _merge(delta: Delta, held: Delta) -> Delta:
    """`delta` with the text `held` was given by `_release` (one field's, or one tool call's) added."""
    for call in held.get("tool_calls", ()):
        _add(delta, call["index"], call["function"]["arguments"])
    for field in _TEXT_FIELDS:
        text = held.get(field)
        if isinstance(text, str):
            _add(delta, field, text)
    return delta


class _Window:
    """The service on the answer: chunks wait until their window of text has been checked."""

    def __init__(self, ctx: RequestContext, settings: ModerationConfig, service: ModerationService,
                 session: aiohttp.ClientSession) -> None:
        self.ctx = ctx
        self.service = service
        self.session = session
        self.fields = _text_fields(settings)
        self.tool_arguments = settings.tool_arguments
        self.pending: list[Chunk] = []
        self.texts: list[str] = []
        self.size = 0
        self.finished: set[int] = set()  # choices whose finish the client has been sent
        self.envelope: Envelope | None = None  # the answer's, for the chunks moderation adds
        self.blocked = False

    async def add(self, chunk: Chunk) -> list[Chunk]:
        if self.envelope is None and chunk.get("choices"):
            self.envelope = Envelope.of(self.ctx.endpoint, chunk, self.ctx.created, self.ctx.model)
        text = self._text(chunk)
        if not text and not self.pending:  # nothing to check (the role chunk): no reason to wait
            return self._sent([chunk])
        self.pending.append(chunk)
        if text:
            self.texts.append(text)
            self.size += len(text)
        return await self._check() if self.size >= self.service.window_chars else []

    async def end(self) -> list[Chunk]:
        return await self._check() if self.pending else []

    async def _check(self) -> list[Chunk]:
        text = "".join(self.texts)
        pending = self.pending
        self.pending, self.texts, self.size = [], [], 0
        if text and await is_flagged(self.session, self.service, text, self.ctx.request_id):
            log.info("request %s blocked by the moderation service", self.ctx.request_id)
            self.blocked = True
            envelope = self.envelope or Envelope(self.ctx.endpoint, self.ctx.created, self.ctx.model)
            return [envelope.finish(i, CONTENT_FILTERED) for i in range(self.ctx.choices) if i not in self.finished]
        return self._sent(pending)

    def _sent(self, chunks: list[Chunk]) -> list[Chunk]:
        for chunk in chunks:
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    self.finished.add(choice.get("index", 0))
        return chunks

    def _text(self, chunk: Chunk) -> str:
        parts: list[str] = []
        for choice in chunk.get("choices") or ():
            delta: Delta = choice.get("delta") or {}
            for field in self.fields:
                text = delta.get(field)
                if isinstance(text, str):
                    parts.append(text)
            if self.tool_arguments:
                for call in delta.get("tool_calls") or ():
                    arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
                    if isinstance(arguments, str):
                        parts.append(arguments)
        return "".join(parts)


# It reads deltas as normalize makes them (reasoning_content, dense tool-call indexes, one finish per choice).
SPEC = MiddlewareSpec("moderate", moderate, after=("normalize",),
                      section=ConfigSection("moderation", parse_moderation, ModerationConfig))
