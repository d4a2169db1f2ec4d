"""Google Gemini's `:streamGenerateContent?alt=sse` wire format.

The request is translated from OpenAI's chat body into a GenerateContentRequest; each SSE event is a
GenerateContentResponse whose candidates' parts become OpenAI chat chunks:
- `text` parts are content, `thought: true` parts reasoning;
- a `functionCall` arrives whole, and becomes one complete tool-call delta with an id made up here
  (Gemini's calls have none); its `thoughtSignature` rides along as `extra_content.google.thought_signature`,
  which is where Google's own OpenAI-compatible endpoint puts it, and is sent back on the next turn;
- Vertex's `streamFunctionCallArguments` mode sends a call in pieces (`partialArgs` with JSON paths):
  the pieces are assembled and the call is emitted, whole, once Vertex says it is complete;
- `usageMetadata` is cumulative on every event: the last counts are sent once, at the end.
There is no `[DONE]`: the stream is complete when every candidate has had its `finishReason`.
"""

from __future__ import annotations

import mimetypes
import re
import uuid
from typing import Any

import orjson

from ..context import RequestContext
from ..errors import GatewayError, invalid_param, redact, upstream_bad_stream, upstream_truncated
from ..sse import SSEEvent
from ..upstream import UpstreamRequest, event_json, stream_error
from ..validation.common import nested_deeper_than, too_deep
from .gemini_schema import SchemaBudget, gemini_schema, parameters_schema

# A model name goes into the URL path: nothing that could leave /v1beta/models/ or start a query.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
# responseId, when it looks like one, seeds the tool-call ids: unique per response and reproducible.
_SAFE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
_DATA_URL = re.compile(r"^data:([\w.+\-]+/[\w.+\-]+)?((?:;[^;,]*)*?);base64,(.*)$", re.DOTALL)
_JSON_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]")

_ROLES = {"user": "user", "assistant": "model"}

# OpenAI reasoning_effort -> thinkingBudget. "minimal" is 512, the smallest budget every 2.5 model
# accepts (Flash-Lite's floor); "none" turns thinking off where the model allows it.
THINKING_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

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


# ---------------------------------------------------------------------------------------------------
# The request


def build_request(ctx: RequestContext) -> UpstreamRequest:
    provider = ctx.provider
    model = checked_model(ctx.model)
    body = request_body(ctx.body, ctx.endpoint)
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream", **provider.headers}
    if provider.api_key:
        headers["x-goog-api-key"] = provider.api_key  # never in the URL, where logs would keep it
    url = f"{provider.base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse"
    return UpstreamRequest(url, headers, orjson.dumps(body))


def checked_model(model: str) -> str:
    if not _MODEL_NAME.match(model) or ".." in model:
        raise invalid_param("model", f"'{model}' is not a valid Gemini model name (letters, digits, '.', '_', '-')",
                            "invalid_model")
    return model


def request_body(body: dict, endpoint: str) -> dict:
    """The GenerateContentRequest for an OpenAI chat or completions body."""
    budget = SchemaBudget()  # one for the request: its tools' schemas and its response schema together
    if endpoint == "completions":
        prompt = body["prompt"]
        text = prompt if isinstance(prompt, str) else "\n".join(prompt)
        out: dict = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    else:
        system, contents = convert_messages(body["messages"])
        out = {"contents": contents}
        if system:
            out["systemInstruction"] = {"parts": system}
        tools, tool_config = convert_tools(body.get("tools"), body.get("tool_choice"), budget)
        if tools:
            out["tools"] = tools
            if tool_config:
                out["toolConfig"] = tool_config
    config = generation_config(body, budget)
    if config:
        out["generationConfig"] = config
    return out


def convert_messages(messages: list) -> tuple[list, list]:
    """(systemInstruction parts, contents): consecutive turns of one role merged, as Gemini wants them."""
    system: list = []
    contents: list = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, from the assistant turns so far
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message["role"]
        if role in ("system", "developer"):
            system.extend(_text_parts(message.get("content"), f"{where}.content"))
            continue
        if role == "user":
            parts = _user_parts(message.get("content"), f"{where}.content")
        elif role == "assistant":
            parts = _assistant_parts(message, where, call_names)
        elif role == "tool":
            parts = [_tool_response(message, where, call_names)]
        else:  # the legacy "function" role names its function itself
            parts = [{"functionResponse": {"name": message.get("name") or "", "response": _response_object(
                _plain_text(message.get("content"), f"{where}.content"))}}]
        if not parts:
            continue  # Gemini rejects a turn without parts
        gemini_role = "model" if role == "assistant" else "user"
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return system, contents


def _plain_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part["text"] for part in _text_parts(content, where))


def _text_parts(content: Any, where: str) -> list[dict]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for j, part in enumerate(content):
        if part.get("type") in ("text", "refusal"):
            text = part.get("text") if part["type"] == "text" else part.get("refusal")
            if not isinstance(text, str):
                raise invalid_param(f"{where}[{j}].text", "a text part needs a string 'text'", "invalid_type")
            if text:
                parts.append({"text": text})
        else:
            raise invalid_param(f"{where}[{j}].type", f"only text parts are allowed here, got '{part.get('type')}'")
    return parts


def _user_parts(content: Any, where: str) -> list[dict]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid_param(f"{where}[{j}].text", "a text part needs a string 'text'", "invalid_type")
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media_part(url, f"{where}[{j}].image_url.url", "image/jpeg"))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            if not isinstance(audio.get("data"), str):
                raise invalid_param(f"{where}[{j}].input_audio.data", "input_audio needs base64 'data'")
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}", "data": audio["data"]}})
        elif kind == "file":
            file = part.get("file") or {}
            parts.append(_media_part(file.get("file_data"), f"{where}[{j}].file.file_data", None))
        else:
            raise invalid_param(f"{where}[{j}].type", f"content part type '{kind}' is not supported by Gemini")
    return parts


def _media_part(url: Any, where: str, fallback_mime: str | None) -> dict:
    """A data: URL is sent inline; an http(s) URL is passed by reference for Google to fetch."""
    if not isinstance(url, str) or not url:
        raise invalid_param(where, "a URL string is required", "invalid_type")
    if url.startswith("data:"):
        match = _DATA_URL.match(url)
        if match is None or not match.group(1):
            raise invalid_param(where, "a data URL must look like data:<mime type>;base64,<data>")
        return {"inlineData": {"mimeType": match.group(1), "data": match.group(3)}}
    if url.startswith(("https://", "http://")) and fallback_mime:
        mime = mimetypes.guess_type(url.split("?", 1)[0].split("#", 1)[0])[0] or fallback_mime
        return {"fileData": {"fileUri": url, "mimeType": mime}}
    raise invalid_param(where, "expected a data: URL" + (" or an http(s) URL" if fallback_mime else ""))


def _assistant_parts(message: dict, where: str, call_names: dict[str, str]) -> list[dict]:
    parts = _text_parts(message.get("content"), f"{where}.content")
    for j, call in enumerate(message.get("tool_calls") or ()):
        call_where = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid_param(f"{call_where}.function", "a tool call needs a 'function' with a 'name'")
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = function["name"]
        args = _arguments(function.get("arguments"), f"{call_where}.function.arguments")
        part: dict = {"functionCall": {"name": function["name"], "args": args}}
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if isinstance(signature, str) and signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        args = _arguments(legacy.get("arguments"), f"{where}.function_call.arguments")
        parts.append({"functionCall": {"name": legacy["name"], "args": args}})
    return parts


def _arguments(arguments: Any, where: str) -> dict:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise invalid_param(where, f"'{where}' must be a JSON object in a string: Gemini needs the arguments parsed")
    if nested_deeper_than(parsed):  # JSON inside a string: the body's own nesting check did not see it
        raise too_deep(where, "a tool call's arguments")
    return parsed


def _tool_response(message: dict, where: str, call_names: dict[str, str]) -> dict:
    call_id = message["tool_call_id"]
    name = call_names.get(call_id)
    if name is None:
        raise invalid_param(f"{where}.tool_call_id", f"no earlier assistant message has a tool call with id "
                            f"'{call_id}': Gemini needs the function's name for its result")
    return {"functionResponse": {"name": name,
                                 "response": _response_object(_plain_text(message.get("content"), f"{where}.content"))}}


def _response_object(text: str) -> dict:
    """A tool's JSON object result goes as it is; anything else (or an object nested too deep to send) is
    wrapped, since Gemini wants an object."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and not nested_deeper_than(parsed):
        return parsed
    return {"content": text}


def convert_tools(tools: Any, tool_choice: Any, budget: SchemaBudget | None = None) -> tuple[list, dict | None]:
    """(tools, toolConfig) from OpenAI's function tools and tool_choice."""
    if not tools:
        return [], None
    declarations = []
    budget = budget or SchemaBudget()
    for i, tool in enumerate(tools):
        function = tool["function"]
        declaration: dict = {"name": function["name"]}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        parameters = parameters_schema(function.get("parameters"), f"tools[{i}].function.parameters", budget)
        if parameters is not None:
            declaration["parameters"] = parameters
        declarations.append(declaration)
    config, allowed = _function_calling_config(tool_choice)
    if allowed is not None:
        declarations = [d for d in declarations if d["name"] in allowed]
    return [{"functionDeclarations": declarations}], config


def _function_calling_config(choice: Any) -> tuple[dict | None, set[str] | None]:
    """(toolConfig, names to keep): OpenAI's `allowed_tools` with mode auto is a narrower tool list."""
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if choice is None:
        return None, None
    if isinstance(choice, str) and choice in modes:
        return {"functionCallingConfig": {"mode": modes[choice]}}, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}, None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = [(t.get("function") or {}).get("name") for t in allowed.get("tools") or () if isinstance(t, dict)]
        if allowed.get("mode") == "required" and all(isinstance(n, str) for n in names):
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": names}}, None
        if allowed.get("mode") == "auto" and all(isinstance(n, str) for n in names):
            return {"functionCallingConfig": {"mode": "AUTO"}}, set(names)
    raise invalid_param("tool_choice", "'tool_choice' must be 'auto', 'none', 'required', a named function, "
                        "or allowed_tools")


def generation_config(body: dict, budget: SchemaBudget | None = None) -> dict:
    config: dict = {}
    for param, key in (("temperature", "temperature"), ("top_p", "topP"), ("presence_penalty", "presencePenalty"),
                       ("frequency_penalty", "frequencyPenalty"), ("n", "candidateCount")):
        if body.get(param) is not None:
            config[key] = body[param]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    seed = body.get("seed")
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise invalid_param("seed", "'seed' must be an integer", "invalid_type")
        config["seed"] = seed
    config.update(_response_format(body.get("response_format"), budget or SchemaBudget()))
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in THINKING_BUDGETS:
            raise invalid_param("reasoning_effort", f"'reasoning_effort' must be one of {', '.join(THINKING_BUDGETS)}")
        thinking: dict = {"thinkingBudget": THINKING_BUDGETS[effort]}
        if thinking["thinkingBudget"]:
            thinking["includeThoughts"] = True  # thought summaries come back as reasoning_content
        config["thinkingConfig"] = thinking
    return config


def _response_format(response_format: Any, budget: SchemaBudget) -> dict:
    if response_format is None:
        return {}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return {"responseMimeType": "application/json", "responseSchema": gemini_schema(
                schema, "response_format.json_schema.schema", budget)}
        return {"responseMimeType": "application/json"}
    raise invalid_param("response_format.type", "'response_format.type' must be 'text', 'json_object' or 'json_schema'")


# ---------------------------------------------------------------------------------------------------
# The stream


class _PendingCall:
    """A Vertex function call arriving in pieces: its name first, then `partialArgs` by JSON path."""

    __slots__ = ("name", "signature", "args", "open_string")

    def __init__(self, name: str, signature: str | None) -> None:
        self.name = name
        self.signature = signature
        self.args: dict = {}
        self.open_string: str | None = None  # the JSON path whose string value is still arriving


class _Candidate:
    __slots__ = ("started", "finished", "calls", "pending")

    def __init__(self) -> None:
        self.started = False  # its first delta (with the role) was sent
        self.finished = False
        self.calls = 0  # tool calls made: their indexes, and STOP means "tool_calls"
        self.pending: _PendingCall | None = None


class State:
    __slots__ = ("provider", "choices", "id_prefix", "id", "created", "model", "candidates", "finished",
                 "usage", "call_prefix", "call_count", "done", "malformed")

    def __init__(self, ctx: RequestContext) -> None:
        self.provider = ctx.provider
        self.choices = ctx.choices
        self.id_prefix = ctx.id_prefix
        self.id: str | None = None  # set by the first event
        self.created = ctx.created
        self.model = ctx.model
        self.candidates: dict[int, _Candidate] = {}
        self.finished = 0
        self.usage: dict | None = None  # the latest usageMetadata with counts
        self.call_prefix = ""
        self.call_count = 0
        self.done = False  # every candidate has its finish reason: Gemini's stream has no end event
        self.malformed = 0


def new_state(ctx: RequestContext) -> State:
    return State(ctx)


def parse_event(event: SSEEvent, state: State) -> tuple[dict, ...]:
    if state.done:
        return ()
    payload = _loads(event.data, state)
    if payload is None:
        return ()
    if "error" in payload:
        raise stream_error(state.provider, payload)
    if state.id is None:
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
    deltas: list = []
    finishes: list = []
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
            return _chunk(state, deltas), _chunk(state, finishes)
        return (_chunk(state, deltas),)
    return (_chunk(state, finishes),) if finishes else ()


def finish(state: State) -> tuple[dict, ...]:
    if state.finished < state.choices:
        raise upstream_truncated(state.provider.name)
    if state.usage is None:
        return ()
    return ({"id": state.id, "object": "chat.completion.chunk", "created": state.created, "model": state.model,
             "choices": [], "usage": openai_usage(state.usage)},)


def openai_usage(meta: dict) -> dict:
    prompt = meta.get("promptTokenCount") or 0
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion = (meta.get("candidatesTokenCount") or 0) + thoughts
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount") or prompt + completion,
        "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount") or 0},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }


def prompt_blocked(state: State, feedback: dict) -> GatewayError:
    reason = feedback["blockReason"]
    detail = feedback.get("blockReasonMessage")
    detail = f": {redact(detail, state.provider.secrets)[:300]}" if isinstance(detail, str) and detail else ""
    return GatewayError(400, f"provider '{state.provider.name}' blocked the prompt (blockReason {reason}){detail}",
                        code="content_filter")


def _start(payload: dict, state: State) -> None:
    response_id = payload.get("responseId")
    if isinstance(response_id, str) and _SAFE_ID.match(response_id):
        state.id = f"{state.id_prefix}{response_id}"
        state.call_prefix = f"call_{response_id}_"
    else:
        made_up = uuid.uuid4().hex
        state.id = f"{state.id_prefix}{made_up}"
        state.call_prefix = f"call_{made_up[:24]}_"
    model = payload.get("modelVersion")
    if isinstance(model, str) and model:
        state.model = model


def _chunk(state: State, choices: list) -> dict:
    return {"id": state.id, "object": "chat.completion.chunk", "created": state.created, "model": state.model,
            "choices": choices}


def _candidate(candidate: dict, state: State, deltas: list, finishes: list) -> None:
    index = candidate.get("index") or 0
    slot = state.candidates.get(index)
    if slot is None:
        slot = state.candidates[index] = _Candidate()
    if slot.finished:
        return  # nothing belongs to an answer after its finish reason
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    reason = candidate.get("finishReason")
    delta = _delta(parts, slot, state) if parts else {}
    if reason and slot.pending is not None:  # Vertex ended the turn without closing a streamed call
        delta.setdefault("tool_calls", []).append(_complete_pending(slot, state))
    if delta:
        if not slot.started:
            slot.started = True
            delta = {"role": "assistant", **delta}
        deltas.append({"index": index, "delta": delta, "logprobs": None, "finish_reason": None})
    if reason:
        if not isinstance(reason, str):
            reason = "OTHER"
        slot.finished = True
        state.finished += 1
        finish_delta = {} if slot.started else {"role": "assistant"}
        slot.started = True
        finishes.append({"index": index, "delta": finish_delta, "logprobs": None,
                         "finish_reason": _finish_reason(reason, candidate, slot, state)})


def _delta(parts: list, slot: _Candidate, state: State) -> dict:
    text = reasoning = ""
    calls: list = []
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
    delta: dict = {}
    if text:
        delta["content"] = text
    if reasoning:
        delta["reasoning_content"] = reasoning
    if calls:
        delta["tool_calls"] = calls
    return delta


def _function_call(part: dict, slot: _Candidate, state: State, calls: list) -> None:
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


def _tool_call(slot: _Candidate, state: State, name: str, args: dict, signature: Any) -> dict:
    call = {"index": slot.calls, "id": f"{state.call_prefix}{state.call_count}", "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
    slot.calls += 1
    state.call_count += 1
    if isinstance(signature, str) and signature:
        call["extra_content"] = {"google": {"thought_signature": signature}}
    return call


def _streamed_call(function: dict, signature: Any, slot: _Candidate, state: State, calls: list) -> None:
    name = function.get("name")
    if isinstance(name, str) and name:
        if slot.pending is not None:  # a new call closes the one before it
            calls.append(_complete_pending(slot, state))
        slot.pending = _PendingCall(name, signature if isinstance(signature, str) else None)
    pending = slot.pending
    if pending is None:
        state.malformed += 1  # pieces of a call whose name never came: nothing to attach them to
        return
    if isinstance(signature, str) and signature and not pending.signature:
        pending.signature = signature
    if isinstance(function.get("args"), dict):
        pending.args.update(function["args"])
    for piece in function.get("partialArgs") or ():
        _add_partial_arg(pending, piece, state)
    if not function.get("willContinue"):
        calls.append(_complete_pending(slot, state))


def _complete_pending(slot: _Candidate, state: State) -> dict:
    pending = slot.pending
    slot.pending = None
    return _tool_call(slot, state, pending.name, pending.args, pending.signature)


def _add_partial_arg(pending: _PendingCall, piece: Any, state: State) -> None:
    path = piece.get("jsonPath") if isinstance(piece, dict) else None
    steps = _json_path(path) if isinstance(path, str) else None
    if not steps:
        raise upstream_bad_stream(state.provider.name, f"a streamed function argument has an unusable path {path!r}")
    if "stringValue" in piece:
        value = piece["stringValue"]
        if pending.open_string == path:
            value = _get_path(pending.args, steps) + value
    elif "numberValue" in piece:
        value = piece["numberValue"]
    elif "boolValue" in piece:
        value = piece["boolValue"]
    elif "nullValue" in piece:
        value = None
    else:
        raise upstream_bad_stream(state.provider.name, f"a streamed function argument at {path!r} has no value")
    _set_path(pending.args, steps, value, state)
    pending.open_string = path if piece.get("willContinue") and "stringValue" in piece else None


def _json_path(path: str) -> list | None:
    """The steps of an RFC 9535 path such as `$.a.b[0]['c d']`; None if it is not that simple kind."""
    if not path.startswith("$"):
        return None
    steps: list = []
    position = 1
    while position < len(path):
        match = _JSON_PATH_STEP.match(path, position)
        if match is None:
            return None
        dotted, number, single, double = match.groups()
        steps.append(int(number) if number is not None else dotted or single or double or "")
        position = match.end()
    return steps


def _get_path(root: dict, steps: list) -> str:
    node: Any = root
    for step in steps:
        node = node[step]
    return node if isinstance(node, str) else ""


def _set_path(root: dict, steps: list, value: Any, state: State) -> None:
    node: Any = root
    for step, following in zip(steps, steps[1:] + [None]):
        fresh: Any = value if following is None else ([] if isinstance(following, int) else {})
        if isinstance(step, int):
            if not isinstance(node, list):
                raise upstream_bad_stream(state.provider.name, "streamed function arguments disagree on their shape")
            node.extend([None] * (step + 1 - len(node)))
            if following is None or node[step] is None:
                node[step] = fresh
        else:
            if not isinstance(node, dict):
                raise upstream_bad_stream(state.provider.name, "streamed function arguments disagree on their shape")
            if following is None or step not in node:
                node[step] = fresh
        node = node[step]


def _finish_reason(reason: str, candidate: dict, slot: _Candidate, state: State) -> str:
    if reason in _FAILED_CALL_REASONS:
        detail = candidate.get("finishMessage")
        detail = f": {redact(detail, state.provider.secrets)[:300]}" if isinstance(detail, str) and detail else ""
        raise GatewayError(502, f"provider '{state.provider.name}' stopped: the model made an invalid function call "
                           f"(finishReason {reason}){detail}", type="upstream_error",
                           code="upstream_invalid_function_call")
    finish = _FINISH_REASONS.get(reason, "stop")  # OTHER, FINISH_REASON_UNSPECIFIED and new reasons
    return "tool_calls" if finish == "stop" and slot.calls else finish


def _loads(data: bytes, state: State) -> dict | None:
    payload = event_json(data, state)  # counts what is not JSON, repairs what is not UTF-8
    if payload is None or isinstance(payload, dict):
        return payload
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and "error" in payload[0]:
        raise stream_error(state.provider, payload[0])  # Gemini sometimes wraps its error in an array
    state.malformed += 1
    return None
