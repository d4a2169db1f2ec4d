"""OpenAI chat and completions bodies as Gemini's GenerateContentRequest (JSON Schemas are cleaned by
gemini_schema.py). Each request Gemini could not take is a 400 naming its `param`.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

import orjson

from ..errors import invalid_param
from ..validation import max_output_tokens, prompt_text
from ..validation.common import nested_deeper_than, too_deep
from ..validation.reasoning import google_thinking_config, output_limit, thinking_budget
from .gemini_schema import SchemaBudget, gemini_schema, parameters_schema

# A model name goes into the URL path: nothing that could leave /v1beta/models/ or start a query.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_DATA_URL = re.compile(r"^data:([\w.+\-]+/[\w.+\-]+)?((?:;[^;,]*)*?);base64,(.*)$", re.DOTALL)

# reasoning_effort -> thinkingBudget: Anthropic's table (validation/reasoning.py), and "none" turns
# thinking off where the model allows it.
EFFORTS = ("none", "minimal", "low", "medium", "high")


def checked_model(model: str) -> str:
    if not _MODEL_NAME.match(model) or ".." in model:
        raise invalid_param("model", f"'{model}' is not a valid Gemini model name (letters, digits, '.', '_', '-')",
                            "invalid_model")
    return model


def request_body(body: dict[str, Any], endpoint: str) -> dict[str, Any]:
    """The GenerateContentRequest for an OpenAI chat or completions body."""
    budget = SchemaBudget()  # one for the request: its tools' schemas and its response schema together
    if endpoint == "completions":
        out: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt_text(body)}]}]}
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


def convert_messages(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents): consecutive turns of one role merged, as Gemini wants them."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
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


def _text_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
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


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_parts(content, where)
    parts: list[dict[str, Any]] = []
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


def _media_part(url: Any, where: str, fallback_mime: str | None) -> dict[str, Any]:
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


def _assistant_parts(message: dict[str, Any], where: str, call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts = _text_parts(message.get("content"), f"{where}.content")
    for j, call in enumerate(message.get("tool_calls") or ()):
        call_where = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise invalid_param(f"{call_where}.function", "a tool call needs a 'function' with a 'name'")
        if isinstance(call.get("id"), str):
            call_names[call["id"]] = function["name"]
        args = _arguments(function.get("arguments"), f"{call_where}.function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
        signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        if isinstance(signature, str) and signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("name"), str):
        args = _arguments(legacy.get("arguments"), f"{where}.function_call.arguments")
        parts.append({"functionCall": {"name": legacy["name"], "args": args}})
    return parts


def _arguments(arguments: Any, where: str) -> dict[str, Any]:
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


def _tool_response(message: dict[str, Any], where: str, call_names: dict[str, str]) -> dict[str, Any]:
    call_id = message["tool_call_id"]
    name = call_names.get(call_id)
    if name is None:
        raise invalid_param(f"{where}.tool_call_id", f"no earlier assistant message has a tool call with id "
                            f"'{call_id}': Gemini needs the function's name for its result")
    return {"functionResponse": {"name": name,
                                 "response": _response_object(_plain_text(message.get("content"), f"{where}.content"))}}


def _response_object(text: str) -> dict[str, Any]:
    """A tool's JSON object result goes as it is; anything else (or an object nested too deep to send) is
    wrapped, since Gemini wants an object."""
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and not nested_deeper_than(parsed):
        return parsed
    return {"content": text}


def convert_tools(tools: Any, tool_choice: Any,
                  budget: SchemaBudget | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(tools, toolConfig) from OpenAI's function tools and tool_choice."""
    if not tools:
        return [], None
    declarations: list[dict[str, Any]] = []
    budget = budget or SchemaBudget()
    for i, tool in enumerate(tools):
        function = tool["function"]
        declaration: dict[str, Any] = {"name": function["name"]}
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


def _function_calling_config(choice: Any) -> tuple[dict[str, Any] | None, set[str] | None]:
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
        named = [n for n in names if isinstance(n, str)]
        every_tool_named = len(named) == len(names)
        if allowed.get("mode") == "required" and every_tool_named:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": named}}, None
        if allowed.get("mode") == "auto" and every_tool_named:
            return {"functionCallingConfig": {"mode": "AUTO"}}, set(named)
    raise invalid_param("tool_choice", "'tool_choice' must be 'auto', 'none', 'required', a named function, "
                        "or allowed_tools")


def generation_config(body: dict[str, Any], budget: SchemaBudget | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for param, key in (("temperature", "temperature"), ("top_p", "topP"), ("presence_penalty", "presencePenalty"),
                       ("frequency_penalty", "frequencyPenalty"), ("n", "candidateCount")):
        if body.get(param) is not None:
            config[key] = body[param]
    max_tokens = max_output_tokens(body)
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
    thinking = _thinking_config(body)
    if thinking is not None:
        thought_tokens = thinking.get("thinkingBudget")
        if isinstance(thought_tokens, int) and thought_tokens > 0:  # thoughts count against maxOutputTokens
            limit = output_limit(max_tokens, thought_tokens, None)
            if limit is not None:
                config["maxOutputTokens"] = limit
        config["thinkingConfig"] = thinking
    return config


def _thinking_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """Google's own thinking_config from the client wins; else reasoning_effort's budget."""
    native = google_thinking_config(body)
    if native is not None:
        keys = (("thinking_budget", "thinkingBudget"), ("include_thoughts", "includeThoughts"),
                ("thinking_level", "thinkingLevel"))
        return {key: native[name] for name, key in keys if native.get(name) is not None}
    effort = body.get("reasoning_effort")
    if effort is None:
        return None
    budget = 0 if effort == "none" else thinking_budget(effort, EFFORTS)
    if not budget:
        return {"thinkingBudget": 0}
    return {"thinkingBudget": budget, "includeThoughts": True}  # thought summaries come back as reasoning_content


def _response_format(response_format: Any, budget: SchemaBudget) -> dict[str, Any]:
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
