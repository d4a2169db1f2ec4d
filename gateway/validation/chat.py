"""The chat-only fields: messages (their content parts, tool calls, thinking blocks), tools and tool_choice.

Every field a provider adapter reads is checked here for its shape, once for every provider, so that
an adapter converts a body it can trust: a wrong type is a 400 naming its `param`, never a traceback.
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid_param
from .common import optional_bool, optional_object, optional_string, wrong_type

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
TOOL_CHOICE_MODES = ("none", "auto", "required")
ALLOWED_TOOLS_MODES = ("auto", "required")


def check_messages(messages: Any) -> None:
    if messages is None:
        raise invalid_param("messages", "you must provide a messages parameter", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise invalid_param("messages", "'messages' must be a non-empty array", "invalid_type")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise wrong_type(where, "an object")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise invalid_param(f"{where}.role", f"'{where}.role' must be one of {', '.join(sorted(ROLES))}")
    content = message.get("content")
    if content is None:
        if role not in ("assistant", "function") and not message.get("tool_calls"):
            raise invalid_param(f"{where}.content", f"'{where}.content' is required for role '{role}'")
    elif isinstance(content, list):
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")
    elif not isinstance(content, str):
        raise wrong_type(f"{where}.content", "a string or an array of parts")
    optional_string(message, "name", f"{where}.name")
    optional_string(message, "tool_call_id", f"{where}.tool_call_id")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise invalid_param(f"{where}.tool_call_id", "a tool message needs a string 'tool_call_id'")
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise wrong_type(f"{where}.tool_calls", "an array")
        for k, call in enumerate(calls):
            _check_tool_call(call, f"{where}.tool_calls[{k}]")
    legacy = optional_object(message, "function_call", f"{where}.function_call")
    if legacy is not None:
        _check_function(legacy, f"{where}.function_call")
    blocks = message.get("thinking_blocks")
    if blocks is not None:
        if not isinstance(blocks, list):
            raise wrong_type(f"{where}.thinking_blocks", "an array")
        for k, block in enumerate(blocks):
            _check_thinking_block(block, f"{where}.thinking_blocks[{k}]")


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise invalid_param(where, "each content part must be an object with a 'type'", "invalid_type")
    kind = part["type"]
    if kind == "text" or kind == "refusal":
        if not isinstance(part.get(kind), str):
            raise wrong_type(f"{where}.{kind}", f"a string (a '{kind}' part needs its '{kind}')")
    elif kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, dict):
            if not isinstance(image.get("url"), str):
                raise wrong_type(f"{where}.image_url.url", "a string")
            optional_string(image, "detail", f"{where}.image_url.detail")
        elif not isinstance(image, str):
            raise wrong_type(f"{where}.image_url", "an object with a 'url'")
    elif kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise wrong_type(f"{where}.input_audio", "an object with 'data' and 'format'")
        if not isinstance(audio.get("data"), str):
            raise wrong_type(f"{where}.input_audio.data", "a string of base64 data")
        optional_string(audio, "format", f"{where}.input_audio.format")
    elif kind == "file":
        file = part.get("file")
        if not isinstance(file, dict):
            raise wrong_type(f"{where}.file", "an object")
        for key in ("file_data", "file_id", "filename"):
            optional_string(file, key, f"{where}.file.{key}")
    # other part types are each adapter's to accept or refuse by name


def _check_function(function: dict[str, Any], where: str) -> None:
    """A called function: `name` a string, `arguments` JSON text (or the object already parsed)."""
    if not isinstance(function.get("name"), str):
        raise invalid_param(f"{where}.name", f"'{where}.name' must be a string", "invalid_type")
    arguments = function.get("arguments")
    if arguments is not None and not isinstance(arguments, (str, dict)):
        raise wrong_type(f"{where}.arguments", "a string of JSON")


def _check_tool_call(call: Any, where: str) -> None:
    if not isinstance(call, dict):
        raise wrong_type(where, "an object")
    optional_string(call, "id", f"{where}.id")
    optional_string(call, "type", f"{where}.type")
    function = call.get("function")
    if not isinstance(function, dict):
        raise invalid_param(f"{where}.function", "a tool call needs a 'function' with a 'name'", "invalid_type")
    _check_function(function, f"{where}.function")
    extra = optional_object(call, "extra_content", f"{where}.extra_content")
    if extra is not None:
        google = optional_object(extra, "google", f"{where}.extra_content.google")
        if google is not None:
            optional_string(google, "thought_signature", f"{where}.extra_content.google.thought_signature")


def _check_thinking_block(block: Any, where: str) -> None:
    if not isinstance(block, dict):
        raise wrong_type(where, "an object")
    for key in ("type", "thinking", "signature", "data"):
        optional_string(block, key, f"{where}.{key}")


def check_tools(tools: Any) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise wrong_type("tools", "an array")
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise invalid_param(f"{where}.function", "each tool needs a 'function' with a 'name'")
        optional_string(tool, "type", f"{where}.type")
        optional_string(function, "description", f"{where}.function.description")
        optional_object(function, "parameters", f"{where}.function.parameters")
        optional_bool(function, "strict", f"{where}.function.strict")


def _named_function(holder: dict[str, Any], where: str) -> None:
    function = holder.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise invalid_param(f"{where}.function", f"'{where}.function.name' must be a non-empty string",
                            "invalid_type")


def check_tool_choice(choice: Any) -> None:
    """'none', 'auto', 'required', a named function, or allowed_tools."""
    if choice is None:
        return
    if isinstance(choice, str):
        if choice not in TOOL_CHOICE_MODES:
            raise invalid_param("tool_choice", f"'tool_choice' must be one of {', '.join(TOOL_CHOICE_MODES)}, "
                                "or an object naming a function")
        return
    if not isinstance(choice, dict):
        raise wrong_type("tool_choice", "a string or an object")
    kind = choice.get("type")
    if kind == "function":
        _named_function(choice, "tool_choice")
    elif kind == "allowed_tools":
        allowed = choice.get("allowed_tools")
        if not isinstance(allowed, dict):
            raise wrong_type("tool_choice.allowed_tools", "an object with 'mode' and 'tools'")
        if allowed.get("mode") not in ALLOWED_TOOLS_MODES:
            raise invalid_param("tool_choice.allowed_tools.mode",
                                f"'tool_choice.allowed_tools.mode' must be one of {', '.join(ALLOWED_TOOLS_MODES)}")
        tools = allowed.get("tools")
        if not isinstance(tools, list):
            raise wrong_type("tool_choice.allowed_tools.tools", "an array")
        for k, tool in enumerate(tools):
            where = f"tool_choice.allowed_tools.tools[{k}]"
            if not isinstance(tool, dict):
                raise wrong_type(where, "an object")
            _named_function(tool, where)
    else:
        raise invalid_param("tool_choice.type", "'tool_choice.type' must be 'function' or 'allowed_tools'")


def check_chat_fields(body: dict[str, Any]) -> None:
    check_messages(body.get("messages"))
    check_tools(body.get("tools"))
    check_tool_choice(body.get("tool_choice"))
    optional_bool(body, "parallel_tool_calls", "parallel_tool_calls")
