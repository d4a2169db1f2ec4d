"""Anthropic's Messages API: OpenAI requests in, Messages SSE out as OpenAI chat chunks.

Reasoning survives a multi-turn tool conversation: thinking text streams as `delta.reasoning_content`,
each thinking block's signature as `delta.reasoning_signature`, a redacted block as
`delta.redacted_thinking`; a combined answer carries them as `message.thinking_blocks`, and an
assistant message sent back with `thinking_blocks` gives Anthropic its thinking blocks again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..chunks import Chunk, Envelope, ToolCallDelta, response_id_of
from ..errors import invalid_param, upstream_truncated
from ..sse import SSEEvent
from ..upstream import UpstreamRequest, json_object, stream_error
from ..validation import max_output_tokens, prompt_text
from ..validation.common import nested_deeper_than, too_deep
from . import anthropic_format
from .base import HttpAdapter

if TYPE_CHECKING:
    from ..context import RequestContext

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
# message.refusal when a structured answer was refused (stop_reason "refusal")
REFUSAL = "The model declined to give this answer (Anthropic stop_reason: refusal)."
# the HTTP status each of Anthropic's error types stands for, so mid-stream errors map like HTTP ones
ERROR_STATUS = {
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
    "overloaded_error": 529,
}


# ---- request: OpenAI shape -> Messages API ----

def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or () if isinstance(p, dict) and p.get("type") == "text")


def _image(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        if ";base64" not in header or not data:
            raise invalid_param(param, "an image data URL must be base64-encoded")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid_param(param, "an image URL must be an http(s) or data: URL")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise invalid_param(f"{where}.content[{j}].image_url", "an image part needs a url")
            blocks.append(_image(url, f"{where}.content[{j}].image_url"))
        else:
            raise invalid_param(f"{where}.content[{j}].type", f"content part type '{kind}' is not supported here")
    return blocks


def _arguments(call: dict[str, Any], where: str) -> dict[str, Any]:
    raw = (call.get("function") or {}).get("arguments") or "{}"
    try:
        value = orjson.loads(raw) if isinstance(raw, str) else raw
    except orjson.JSONDecodeError:
        raise invalid_param(f"{where}.function.arguments", "tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise invalid_param(f"{where}.function.arguments", "tool call arguments must be a JSON object")
    if nested_deeper_than(value):  # JSON inside a string: the body's own nesting check did not see it
        raise too_deep(f"{where}.function.arguments", "a tool call's arguments")
    return value


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for block in message.get("thinking_blocks") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and block.get("signature"):
            blocks.append({"type": "thinking", "thinking": block.get("thinking", ""), "signature": block["signature"]})
        elif block.get("type") == "redacted_thinking" and block.get("data"):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
    return blocks


def _messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating messages): same-role turns merged, tool results in user turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            text = _text(message.get("content"))
            if text:
                system.append({"type": "text", "text": text})
            continue
        if role == "assistant":
            blocks = _thinking_blocks(message) + _blocks(message.get("content"), where)
            for k, call in enumerate(message.get("tool_calls") or ()):
                function = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id") or f"toolu_gw{i}_{k}",
                               "name": function.get("name", ""), "input": _arguments(call, f"{where}.tool_calls[{k}]")})
            turn_role = "assistant"
        elif role in ("tool", "function"):
            result = message.get("content")
            blocks = [{"type": "tool_result", "tool_use_id": message.get("tool_call_id") or message.get("name", ""),
                       "content": _blocks(result, where) if isinstance(result, list) else _text(result)}]
            turn_role = "user"
        else:
            blocks = _blocks(message.get("content"), where)
            turn_role = "user"
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    return system, turns


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    out: dict[str, Any]
    if isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    else:
        out = {"type": {"none": "none", "required": "any", "any": "any"}.get(choice, "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def build_body(ctx: RequestContext) -> dict[str, Any]:
    body = ctx.body
    if ctx.endpoint == "completions":
        messages = [{"role": "user", "content": prompt_text(body)}]
    else:
        messages = body["messages"]
    if (body.get("n") or 1) > 1:  # one answer per request: n answers would silently be one
        raise invalid_param("n", "Anthropic gives one answer per request: 'n' must be 1")
    system, turns = _messages(messages)
    if not turns:
        raise invalid_param("messages", "Anthropic needs at least one user or assistant message")
    out: dict[str, Any] = {"model": ctx.model, "messages": turns, "stream": True}
    if system:
        out["system"] = system
    thinking = anthropic_format.thinking(body)
    out["max_tokens"] = anthropic_format.max_tokens(max_output_tokens(body), thinking, DEFAULT_MAX_TOKENS)
    if thinking is not None:
        out["thinking"] = thinking
    thinking_on = anthropic_format.thinking_on(thinking)
    if body.get("temperature") is not None and not thinking_on:  # thinking allows no temperature
        out["temperature"] = min(float(body["temperature"]), 1.0)  # Anthropic's range is 0..1
    if body.get("top_p") is not None and not thinking_on:  # nor top_p
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else stop
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in tools
        ]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and tools:
        if thinking_on and choice["type"] in ("any", "tool"):  # Anthropic refuses a forced tool while thinking
            raise invalid_param("tool_choice", "with thinking on, Anthropic takes only tool_choice 'auto' or 'none': "
                                "drop reasoning_effort to force a tool")
        out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    anthropic_format.apply_response_format(out, body, ctx.model)
    return out


def build_request(ctx: RequestContext) -> UpstreamRequest:
    provider = ctx.provider
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
               "anthropic-version": API_VERSION, **provider.headers}
    if provider.api_key:
        headers["x-api-key"] = provider.api_key
    return UpstreamRequest(f"{provider.base_url}/v1/messages", headers, orjson.dumps(build_body(ctx)))


# ---- stream: Messages SSE -> OpenAI chunks ----

class Block:
    """A content block being streamed: its type and, for a `tool_use` block, its tool call."""

    __slots__ = ("type", "tool_index", "got_arguments")

    def __init__(self, type: str | None, tool_index: int | None = None) -> None:
        self.type = type
        self.tool_index = tool_index  # the tool call's index in the OpenAI deltas; set on tool_use blocks only
        self.got_arguments = False  # a call that got none sends "{}" when its block stops


class State:
    __slots__ = ("provider", "envelope", "started", "blocks", "tools", "answer_tool", "structured", "input_tokens",
                 "cache_read_tokens", "cache_write_tokens", "output_tokens", "thinking_tokens", "finish", "done",
                 "malformed")

    def __init__(self, ctx: RequestContext) -> None:
        self.provider = ctx.provider
        # the request's id until message_start gives Anthropic's message id
        self.envelope = Envelope(ctx.endpoint, ctx.created, ctx.model, response_id_of(ctx.endpoint, ctx.request_id))
        self.started = False
        self.blocks: dict[object, Block] = {}  # by Anthropic's block index, as sent (an int when well-formed)
        self.tools = 0
        # the forced tool that carries a structured answer: its input is the message's content
        self.answer_tool = anthropic_format.answer_tool(ctx.body, ctx.model)
        self.structured = anthropic_format.structured_kind(ctx.body) is not None
        self.input_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.output_tokens = 0
        self.thinking_tokens: int | None = None
        self.finish: str | None = None
        self.done = False
        self.malformed = 0


def new_state(ctx: RequestContext) -> State:
    return State(ctx)


def _usage(state: State) -> dict[str, Any]:
    """OpenAI's terms: prompt_tokens is every input token billed (Anthropic's input_tokens counts neither
    cache reads nor cache writes); cached_tokens those read from the cache; cache writes apart."""
    prompt = state.input_tokens + state.cache_read_tokens + state.cache_write_tokens
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": state.output_tokens,
             "total_tokens": prompt + state.output_tokens,
             "prompt_tokens_details": {"cached_tokens": state.cache_read_tokens,
                                       "cache_creation_tokens": state.cache_write_tokens}}
    if state.thinking_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": state.thinking_tokens}
    return usage


def _count_input(state: State, usage: dict[str, Any]) -> None:
    if isinstance(usage.get("input_tokens"), int):
        state.input_tokens = usage["input_tokens"]
    if isinstance(usage.get("cache_read_input_tokens"), int):
        state.cache_read_tokens = usage["cache_read_input_tokens"]
    if isinstance(usage.get("cache_creation_input_tokens"), int):
        state.cache_write_tokens = usage["cache_creation_input_tokens"]


def parse_event(event: SSEEvent, state: State) -> tuple[Chunk, ...]:
    if state.done:
        return ()
    payload = json_object(event.data, state)
    if payload is None:
        return ()
    kind = payload.get("type") or event.event
    if kind == "content_block_delta":
        return _block_delta(state, payload)
    if kind == "content_block_start":
        return _block_start(state, payload)
    if kind == "content_block_stop":
        block = state.blocks.get(payload.get("index"))
        if block and block.type == "answer" and not block.got_arguments:
            return (state.envelope.delta(0, {"content": "{}"}),)
        if block and block.tool_index is not None and not block.got_arguments:  # a call with no arguments: "{}"
            return (state.envelope.delta(0, {"tool_calls": [{"index": block.tool_index,
                                                             "function": {"arguments": "{}"}}]}),)
        return ()
    if kind == "message_start":
        if state.started:  # a second message_start (spliced streams) does not restart the answer
            return ()
        state.started = True
        message = payload.get("message") or {}
        if message.get("id"):
            state.envelope.identify(str(message["id"]))
        if message.get("model"):
            state.envelope.model = message["model"]
        _count_input(state, message.get("usage") or {})
        return (state.envelope.delta(0, {"role": "assistant", "content": ""}),)
    if kind == "message_delta":
        usage = payload.get("usage") or {}
        _count_input(state, usage)
        if isinstance(usage.get("output_tokens"), int):
            state.output_tokens = usage["output_tokens"]
        thinking = (usage.get("output_tokens_details") or {}).get("thinking_tokens")
        if isinstance(thinking, int):
            state.thinking_tokens = thinking
        reason = (payload.get("delta") or {}).get("stop_reason")
        if not reason or state.finish:
            return ()
        if state.structured and reason == "refusal":  # as OpenAI's structured outputs say it
            state.finish = "stop"
            return (state.envelope.delta(0, {"refusal": REFUSAL}), state.envelope.finish(0, "stop"),
                    state.envelope.usage(_usage(state)))
        state.finish = FINISH_REASONS.get(reason, "stop")
        if state.finish == "tool_calls" and state.tools == 0:  # only the answer tool was called
            state.finish = "stop"
        return state.envelope.finish(0, state.finish), state.envelope.usage(_usage(state))
    if kind == "message_stop":
        state.done = True
        return ()
    if kind == "error":
        error = payload.get("error") or {}
        error_type = error.get("type")
        status = ERROR_STATUS.get(error_type, 502) if isinstance(error_type, str) else 502
        raise stream_error(state.provider, {"error": {"message": error.get("message") or error.get("type"),
                                                      "status_code": status}})
    return ()  # ping and unknown events


def _block_start(state: State, payload: dict[str, Any]) -> tuple[Chunk, ...]:
    index = payload.get("index")
    block = payload.get("content_block") or {}
    kind = block.get("type")
    if kind == "tool_use" and state.answer_tool is not None and block.get("name") == state.answer_tool:
        state.blocks[index] = Block("answer")
        return ()
    if kind == "tool_use":
        state.blocks[index] = Block("tool_use", state.tools)
        state.tools += 1
        header: ToolCallDelta = {"index": state.tools - 1, "id": block.get("id") or f"toolu_gw{state.tools}",
                                 "type": "function", "function": {"name": block.get("name", ""), "arguments": ""}}
        return (state.envelope.delta(0, {"tool_calls": [header]}),)
    state.blocks[index] = Block(kind)
    if kind == "text" and block.get("text"):
        return (state.envelope.delta(0, {"content": block["text"]}),)
    if kind == "thinking" and block.get("thinking"):
        return (state.envelope.delta(0, {"reasoning_content": block["thinking"]}),)
    if kind == "redacted_thinking":
        return (state.envelope.delta(0, {"redacted_thinking": block.get("data", "")}),)
    return ()  # server_tool_use and *_tool_result blocks run on Anthropic's side: not client tool calls


def _block_delta(state: State, payload: dict[str, Any]) -> tuple[Chunk, ...]:
    block = state.blocks.get(payload.get("index"))
    if block is None:
        return ()
    delta = payload.get("delta") or {}
    kind = delta.get("type")
    if kind == "text_delta" and block.type == "text":
        text = delta.get("text")
        return (state.envelope.delta(0, {"content": text}),) if text else ()
    if kind == "input_json_delta" and block.type == "answer":
        fragment = delta.get("partial_json")
        if not fragment:
            return ()
        block.got_arguments = True
        return (state.envelope.delta(0, {"content": fragment}),)
    if kind == "input_json_delta" and block.tool_index is not None:  # a tool_use block
        fragment = delta.get("partial_json")
        if not fragment:
            return ()
        block.got_arguments = True
        return (state.envelope.delta(0, {"tool_calls": [{"index": block.tool_index,
                                                         "function": {"arguments": fragment}}]}),)
    if kind == "thinking_delta":
        text = delta.get("thinking")
        return (state.envelope.delta(0, {"reasoning_content": text}),) if text else ()
    if kind == "signature_delta" and delta.get("signature"):
        return (state.envelope.delta(0, {"reasoning_signature": delta["signature"]}),)
    return ()  # citations_delta, and deltas of server-side tool blocks


def finish(state: State) -> tuple[Chunk, ...]:
    if state.finish is None:
        raise upstream_truncated(state.provider.name)
    return ()


class AnthropicAdapter(HttpAdapter[State, SSEEvent]):
    kind = "anthropic"
    build_request = staticmethod(build_request)
    new_state = staticmethod(new_state)
    parse_event = staticmethod(parse_event)
    finish = staticmethod(finish)


ADAPTER = AnthropicAdapter()
