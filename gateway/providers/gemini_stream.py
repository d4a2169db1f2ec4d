"""Gemini's stream: each SSE event is a GenerateContentResponse whose candidates' parts become OpenAI
chat chunks (the request side is gemini_request.py):
- `text` parts are content, `thought: true` parts reasoning;
- a `functionCall` arrives whole, and becomes one complete tool-call delta with an id made up here
  (Gemini's calls have none); its `thoughtSignature` rides along as `extra_content.google.thought_signature`,
  which is where Google's own OpenAI-compatible endpoint puts it, and is sent back on the next turn;
- Vertex's `streamFunctionCallArguments` mode sends a call in pieces (gemini_partial_args.py): it is
  emitted, whole, once Vertex says it is complete;
- `usageMetadata` is cumulative on every event: the last counts are sent once, at the end.
There is no `[DONE]`: the stream is complete when every candidate has had its `finishReason`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from ..ids import random_id
from ..chunks import Chunk, Delta, Envelope, ToolCallDelta, choice
from ..errors import GatewayError, upstream_truncated
from ..redaction import redact
from ..sse import SSEEvent
from ..upstream import event_json, stream_error
from .gemini_partial_args import PendingCall, add_partial_arg

if TYPE_CHECKING:
    from ..context import RequestContext

# responseId, when it looks like one, seeds the tool-call ids: unique per response and reproducible.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
# The model tried to call a tool and failed: the turn holds no usable call, so "stop" would be a lie.
_FAILED_CALL_REASONS = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})


class _Candidate:
    __slots__ = ("started", "finished", "calls", "pending")

    def __init__(self) -> None:
        self.started = False  # its first delta (with the role) was sent
        self.finished = False
        self.calls = 0  # tool calls made: their indexes, and STOP means "tool_calls"
        self.pending: PendingCall | None = None


class State:
    __slots__ = ("provider", "choices", "envelope", "started", "candidates", "finished", "usage", "call_prefix",
                 "call_count", "done", "malformed")

    def __init__(self, ctx: RequestContext) -> None:
        self.provider = ctx.provider
        self.choices = ctx.choices
        self.envelope = Envelope(ctx.endpoint, ctx.created, ctx.model)  # its id comes with the first event
        self.started = False
        self.candidates: dict[int, _Candidate] = {}
        self.finished = 0
        self.usage: dict[str, Any] | None = None  # the latest usageMetadata with counts
        self.call_prefix = ""
        self.call_count = 0
        self.done = False  # every candidate has its finish reason: Gemini's stream has no end event
        self.malformed = 0


def parse_event(event: SSEEvent, state: State) -> tuple[Chunk, ...]:
    if state.done:
        return ()
    payload = _loads(event.data, state)
    if payload is None:
        return ()
    if "error" in payload:
        raise stream_error(state.provider, payload)
    if not state.started:
        _start(payload, state)
    usage = payload.get("usageMetadata")
    if usage and ("totalTokenCount" in usage or "promptTokenCount" in usage):
        state.usage = usage  # cumulative: the last one is the total (Vertex sends some without counts)
    candidates = payload.get("candidates")
    if not candidates:
        feedback = payload.get("promptFeedback")
        if feedback and feedback.get("blockReason"):
            raise prompt_blocked(state, feedback)
        return ()
    deltas: list[Any] = []
    finishes: list[Any] = []
    for candidate in candidates:
        if isinstance(candidate, dict):
            _candidate(candidate, state, deltas, finishes)
        else:
            state.malformed += 1
    if finishes and state.finished >= state.choices:
        state.done = True  # the final event also carries the final usageMetadata
    # The finish goes in its own chunk after the content, as OpenAI sends it: no client loses the text.
    if deltas:
        if finishes:
            return state.envelope.chunk(deltas), state.envelope.chunk(finishes)
        return (state.envelope.chunk(deltas),)
    return (state.envelope.chunk(finishes),) if finishes else ()


def finish(state: State) -> tuple[Chunk, ...]:
    if state.finished < state.choices:
        raise upstream_truncated(state.provider.name)
    if state.usage is None:
        return ()
    return (state.envelope.usage(openai_usage(state.usage)),)


def openai_usage(meta: dict[str, Any]) -> dict[str, Any]:
    """promptTokenCount holds the cached tokens; the tool-use prompt (a search's results...) is billed input too."""
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion = (meta.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def prompt_blocked(state: State, feedback: dict[str, Any]) -> GatewayError:
    reason = feedback["blockReason"]
    detail = feedback.get("blockReasonMessage")
    detail = f": {redact(detail, state.provider.secrets)[:300]}" if isinstance(detail, str) and detail else ""
    return GatewayError(400, f"provider '{state.provider.name}' blocked the prompt (blockReason {reason}){detail}",
                        code="content_filter")


def _start(payload: dict[str, Any], state: State) -> None:
    state.started = True
    response_id = payload.get("responseId")
    if not (isinstance(response_id, str) and _SAFE_ID.match(response_id)):
        response_id = random_id()
        state.call_prefix = f"call_{response_id[:24]}_"
    else:
        state.call_prefix = f"call_{response_id}_"
    state.envelope.identify(response_id)
    model = payload.get("modelVersion")
    if isinstance(model, str) and model:
        state.envelope.model = model




def _candidate(candidate: dict[str, Any], state: State, deltas: list[Any], finishes: list[Any]) -> None:
    index = candidate.get("index") or 0
    slot = state.candidates.get(index)
    if slot is None:
        slot = state.candidates[index] = _Candidate()
    if slot.finished:
        return  # nothing belongs to an answer after its finish reason
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    reason = candidate.get("finishReason")
    delta: Delta = _delta(parts, slot, state) if parts else {}
    if reason and slot.pending is not None:  # Vertex ended the turn without closing a streamed call
        delta.setdefault("tool_calls", []).append(_complete_pending(slot, state))
    if delta:
        if not slot.started:
            slot.started = True
            delta = {"role": "assistant", **delta}
        deltas.append(choice(index, delta))
    if reason:
        if not isinstance(reason, str):
            reason = "OTHER"
        slot.finished = True
        state.finished += 1
        finish_delta: Delta = {} if slot.started else {"role": "assistant"}
        slot.started = True
        finishes.append(choice(index, finish_delta, _finish_reason(reason, candidate, slot, state)))


def _delta(parts: list[Any], slot: _Candidate, state: State) -> Delta:
    text = reasoning = ""
    calls: list[ToolCallDelta] = []
    for part in parts:
        if not isinstance(part, dict):
            state.malformed += 1
            continue
        value = part.get("text")
        if value is not None:
            if not isinstance(value, str):
                state.malformed += 1
            elif part.get("thought"):
                reasoning += value
            else:
                text += value
        elif "functionCall" in part:
            _function_call(part, slot, state, calls)
        # executableCode, codeExecutionResult, inlineData...: OpenAI's chat chunks have no place for them
    delta: Delta = {}
    if text:
        delta["content"] = text
    if reasoning:
        delta["reasoning_content"] = reasoning
    if calls:
        delta["tool_calls"] = calls
    return delta


def _function_call(part: dict[str, Any], slot: _Candidate, state: State, calls: list[ToolCallDelta]) -> None:
    function = part["functionCall"]
    if not isinstance(function, dict):
        state.malformed += 1
        return
    if slot.pending is not None or function.get("willContinue") or "partialArgs" in function:
        _streamed_call(function, part.get("thoughtSignature"), slot, state, calls)
        return
    name = function.get("name")
    args = function.get("args")
    if not isinstance(name, str) or not name or not isinstance(args, (dict, type(None))):
        state.malformed += 1
        return
    calls.append(_tool_call(slot, state, name, args or {}, part.get("thoughtSignature")))


def _tool_call(slot: _Candidate, state: State, name: str, args: dict[str, Any], signature: Any) -> ToolCallDelta:
    call: ToolCallDelta = {"index": slot.calls, "id": f"{state.call_prefix}{state.call_count}", "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
    slot.calls += 1
    state.call_count += 1
    if isinstance(signature, str) and signature:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


def _streamed_call(function: dict[str, Any], signature: Any, slot: _Candidate, state: State, calls: list[ToolCallDelta]) -> None:
    name = function.get("name")
    if isinstance(name, str) and name:
        if slot.pending is not None:  # a new call closes the one before it
            calls.append(_complete_pending(slot, state))
        slot.pending = PendingCall(name, signature if isinstance(signature, str) else None)
    pending = slot.pending
    if pending is None:
        state.malformed += 1  # pieces of a call whose name never came: nothing to attach them to
        return
    if isinstance(signature, str) and signature and not pending.signature:
        pending.signature = signature
    if isinstance(function.get("args"), dict):
        pending.args.update(function["args"])
    for piece in function.get("partialArgs") or ():
        add_partial_arg(pending, piece, state.provider.name)
    if not function.get("willContinue"):
        calls.append(_complete_pending(slot, state))


def _complete_pending(slot: _Candidate, state: State) -> ToolCallDelta:
    pending = slot.pending
    assert pending is not None  # called only while a streamed call is open
    slot.pending = None
    return _tool_call(slot, state, pending.name, pending.args, pending.signature)



def _finish_reason(reason: str, candidate: dict[str, Any], slot: _Candidate, state: State) -> str:
    if reason in _FAILED_CALL_REASONS:
        detail = candidate.get("finishMessage")
        detail = f": {redact(detail, state.provider.secrets)[:300]}" if isinstance(detail, str) and detail else ""
        raise GatewayError(502, f"provider '{state.provider.name}' stopped: the model made an invalid function call "
                           f"(finishReason {reason}){detail}", type="upstream_error",
                           code="upstream_invalid_function_call")
    finish = _FINISH_REASONS.get(reason, "stop")  # OTHER, FINISH_REASON_UNSPECIFIED and new reasons
    return "tool_calls" if finish == "stop" and slot.calls else finish


def _loads(data: bytes, state: State) -> dict[str, Any] | None:
    payload = event_json(data, state)  # counts what is not JSON, repairs what is not UTF-8
    if payload is None or isinstance(payload, dict):
        return payload
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and "error" in payload[0]:
        raise stream_error(state.provider, payload[0])  # Gemini sometimes wraps its error in an array
    state.malformed += 1
    return None
