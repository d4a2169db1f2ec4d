"""The Gemini adapter: what goes upstream (URL, headers, GenerateContentRequest), how Gemini's stream and
errors come back, the OpenAI SDK on top of it, and every Gemini recording replayed through the gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.providers import gemini_schema
from gateway.sse import SSEDecoder
from tests.conftest import FAKE_KEY, recordings_dir
from tests.fakes.upstream import Reply
from tests.helpers import (BOUND, GEMINI_OK_STREAM, STRICT_TOOLS, decode, gemini_answer, gemini_wire, read_events, reassemble)

GOLDEN = Path(__file__).parent / "golden" / "gemini"
JSON = {"Content-Type": "application/json"}
MODEL = "gem/gemini-2.5-flash"
URL_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


async def sent(gateway, upstream, request: dict, path: str = "/v2/chat/completions"):
    """What the fake Gemini received for one client request (answered with a plain "ok")."""
    upstream.stream(GEMINI_OK_STREAM)
    response = await gateway.post(path, json={"model": MODEL, "stream": True, **request})
    assert response.status == 200, await response.text()
    await response.read()
    assert len(upstream.received) == 1
    return upstream.received[0]


async def rejected(gateway, upstream, request: dict) -> dict:
    response = await gateway.post("/v2/chat/completions", json={"model": MODEL, **request})
    assert response.status == 400, await response.text()
    assert upstream.received == []  # nothing reached Gemini
    return (await response.json())["error"]


# ---------------------------------------------------------------------------------------------------
# The request


async def test_url_path_and_key_header(gateway, upstream):
    received = await sent(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}]})
    assert received.path == URL_PATH
    assert received.headers["x-goog-api-key"] == FAKE_KEY
    assert FAKE_KEY not in received.path and "key=" not in received.path
    assert "Authorization" not in received.headers
    assert received.body == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def test_conversation_with_tools_converts_to_contents(gateway, upstream):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
             "extra_content": {"google": {"thought_signature": "SIG-A"}}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 12, "sky": "clear"}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "14:05"},
        {"role": "user", "content": "Thanks. And tomorrow?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_c", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Oslo","day":1}'}}]},
        {"role": "tool", "tool_call_id": "call_c", "content": [{"type": "text", "text": "rain"}]},
    ]
    received = await sent(gateway, upstream, {"messages": messages})
    assert received.body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Weather and time in Oslo?"}]},
            {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "SIG-A"},
                {"functionCall": {"name": "get_time", "args": {}}},
            ]},
            {"role": "user", "parts": [  # tool results and the next user turn merge into one user content
                {"functionResponse": {"name": "get_weather", "response": {"temp": 12, "sky": "clear"}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "14:05"}}},
                {"text": "Thanks. And tomorrow?"},
            ]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo", "day": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": "rain"}}}]},
        ],
    }
    assert "tools" not in received.body and "toolConfig" not in received.body


async def test_consecutive_same_role_messages_merge_and_empty_turns_vanish(gateway, upstream):
    received = await sent(gateway, upstream, {"messages": [
        {"role": "user", "content": "one"}, {"role": "user", "content": "two"},
        {"role": "assistant", "content": ""}, {"role": "user", "content": [{"type": "text", "text": "three"}]}]})
    assert received.body["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}, {"text": "three"}]}]


@pytest.mark.parametrize(("arguments", "param"), [
    ("{not json", "messages[1].tool_calls[0].function.arguments"),
    ("[1, 2]", "messages[1].tool_calls[0].function.arguments"),
])
async def test_tool_call_arguments_must_be_a_json_object(gateway, upstream, arguments, param):
    error = await rejected(gateway, upstream, {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "f", "arguments": arguments}}]}]})
    assert error["param"] == param


async def test_tool_result_without_matching_call_is_rejected(gateway, upstream):
    error = await rejected(gateway, upstream, {"messages": [
        {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_nowhere", "content": "x"}]})
    assert error["param"] == "messages[1].tool_call_id"
    assert "call_nowhere" in error["message"]


async def test_images_data_url_inline_and_http_url_by_reference(gateway, upstream):
    received = await sent(gateway, upstream, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp?size=2", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/render"}},
    ]}]})
    assert received.body["contents"][0]["parts"] == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://example.com/cat.webp?size=2", "mimeType": "image/webp"}},
        {"fileData": {"fileUri": "https://example.com/render", "mimeType": "image/jpeg"}},
    ]


@pytest.mark.parametrize("url", ["data:image/png,notbase64", "ftp://example.com/a.png", "file:///etc/passwd"])
async def test_unusable_image_urls_are_rejected(gateway, upstream, url):
    error = await rejected(gateway, upstream, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]})
    assert error["param"] == "messages[0].content[0].image_url.url"


async def test_completions_prompt_is_one_user_message(gateway, upstream):
    received = await sent(gateway, upstream, {"prompt": ["Say", "this"], "max_tokens": 5}, "/v2/completions")
    assert received.path == URL_PATH
    assert received.body == {"contents": [{"role": "user", "parts": [{"text": "Say\nthis"}]}],
                             "generationConfig": {"maxOutputTokens": 5}}


async def test_generation_config_mapping(gateway, upstream):
    received = await sent(gateway, upstream, {
        "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3, "top_p": 0.9, "max_tokens": 99,
        "max_completion_tokens": 200, "stop": ["END", "\n\n"], "n": 2, "presence_penalty": 0.5,
        "frequency_penalty": -0.5, "seed": 7, "response_format": {"type": "json_object"},
        "user": "u-1", "parallel_tool_calls": False})
    assert received.body["generationConfig"] == {
        "temperature": 0.3, "topP": 0.9, "presencePenalty": 0.5, "frequencyPenalty": -0.5, "candidateCount": 2,
        "maxOutputTokens": 200, "stopSequences": ["END", "\n\n"], "seed": 7, "responseMimeType": "application/json"}


async def test_single_stop_string_and_json_schema_response_format(gateway, upstream):
    received = await sent(gateway, upstream, {
        "messages": [{"role": "user", "content": "hi"}], "stop": "END",
        "response_format": {"type": "json_schema", "json_schema": {"name": "gemini_answer", "strict": True, "schema": {
            "type": "object", "additionalProperties": False, "required": ["city"],
            "properties": {"city": {"type": "string", "title": "City"}}}}}})
    assert received.body["generationConfig"] == {
        "stopSequences": ["END"], "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.mark.parametrize(("effort", "thinking"), [
    ("none", {"thinkingBudget": 0}),
    ("minimal", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("low", {"thinkingBudget": 2048, "includeThoughts": True}),
    ("medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("high", {"thinkingBudget": 24576, "includeThoughts": True}),
])
async def test_reasoning_effort_sets_a_thinking_budget(gateway, upstream, effort, thinking):
    received = await sent(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}],
                                              "reasoning_effort": effort})
    assert received.body["generationConfig"] == {"thinkingConfig": thinking}


@pytest.mark.parametrize(("request_extra", "param"), [
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"seed": "7"}, "seed"),
    ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ({"tools": STRICT_TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]}, "messages[0].content[0].type"),
])
async def test_unusable_parameters_name_their_param(gateway, upstream, request_extra, param):
    error = await rejected(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}], **request_extra})
    assert error["param"] == param


@pytest.mark.parametrize("model", ["gem/../../v1/x", "gem/a?b", "gem/a%2F", "gem/a#b", "gem/a:b", "gem/..",
                                   "gem/.hidden", "gem/a/b", "gem/a b", "gem/gemini-2.5-flash..x"])
async def test_model_names_that_could_leave_the_path_are_rejected(gateway, upstream, model):
    response = await gateway.post("/v2/chat/completions", json={
        "model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "model"
    assert upstream.received == []


# ---------------------------------------------------------------------------------------------------
# Tools


WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


async def test_tools_become_function_declarations(gateway, upstream):
    no_args = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
    bare = {"type": "function", "function": {"name": "ping"}}
    received = await sent(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}],
                                              "tools": [WEATHER, no_args, bare]})
    assert received.body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather now", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "now"},  # Gemini rejects an object schema without properties
        {"name": "ping"},
    ]}]


async def test_schema_cleaning(gateway, upstream):
    parameters = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "title": "Args",
        "additionalProperties": False,
        "$defs": {
            "Unit": {"type": "string", "enum": ["C", "F"], "title": "Unit"},
            "Place": {"type": "object", "title": "Place", "additionalProperties": False,
                      "properties": {"name": {"type": "string"}, "near": {"$ref": "#/$defs/Unit"}},
                      "required": ["name", "near"]},
        },
        "properties": {
            "title": {"type": "string", "description": "a property called title", "default": "x",
                      "examples": ["a"]},
            "when": {"type": ["string", "null"], "format": "date-time"},
            "email": {"type": "string", "format": "email", "minLength": 3},
            "count": {"type": "integer", "format": "int64", "minimum": 0, "exclusiveMaximum": 9},
            "level": {"type": "integer", "enum": [1, 2, 3], "description": "Level"},
            "kind": {"const": "fixed"},
            "unit": {"$ref": "#/$defs/Unit", "description": "Temperature unit"},
            "maybe_unit": {"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}], "default": None},
            "place": {"allOf": [{"$ref": "#/$defs/Place"}], "description": "Where"},
            "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "tags": {"type": "array", "items": {"type": "string", "title": "Tag"}, "maxItems": 3,
                     "uniqueItems": True},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["title", "unit", "ghost"],
    }
    tool = {"type": "function", "function": {"name": "f", "strict": True, "parameters": parameters}}
    received = await sent(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}], "tools": [tool]})
    assert received.body["tools"][0]["functionDeclarations"][0]["parameters"] == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "a property called title"},
            "when": {"type": "string", "nullable": True, "format": "date-time"},
            "email": {"type": "string", "minLength": 3},
            "count": {"type": "integer", "minimum": 0, "format": "int64"},
            "level": {"type": "integer", "description": "Level (one of: 1, 2, 3)"},
            "kind": {"type": "string", "enum": ["fixed"]},
            "unit": {"type": "string", "enum": ["C", "F"], "description": "Temperature unit"},
            "maybe_unit": {"type": "string", "enum": ["C", "F"], "nullable": True},
            "place": {"type": "object", "description": "Where", "properties": {
                "name": {"type": "string"}, "near": {"type": "string", "enum": ["C", "F"]}},
                "required": ["name", "near"]},
            "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
            "extra": {"type": "object"},
        },
        "required": ["title", "unit"],
    }


_ALLOWED_SCHEMA_KEYS = {"type", "format", "description", "nullable", "enum", "items", "minItems", "maxItems",
                        "minLength", "maxLength", "minProperties", "maxProperties", "minimum", "maximum", "pattern",
                        "properties", "required", "anyOf"}


def _schema_keys_ok(schema: dict) -> bool:
    if set(schema) - _ALLOWED_SCHEMA_KEYS:
        return False
    children = list((schema.get("properties") or {}).values()) + list(schema.get("anyOf") or ())
    if "items" in schema:
        children.append(schema["items"])
    return all(isinstance(c, dict) and _schema_keys_ok(c) for c in children)


_json_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5)
_keywords = st.sampled_from(["type", "properties", "items", "anyOf", "oneOf", "allOf", "$ref", "$defs", "const",
                             "enum", "format", "title", "default", "additionalProperties", "required", "nullable",
                             "description", "examples", "$schema", "minimum", "definitions", "not"])
_schemas = st.recursive(
    _json_scalars | st.sampled_from(["string", "null", "object", "array", "#/$defs/a", "date-time", "email"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keywords | st.text(max_size=4), inner, max_size=5),
    max_leaves=25)


def _nodes(schema: dict) -> int:
    children = list((schema.get("properties") or {}).values()) + list(schema.get("anyOf") or ())
    if "items" in schema:
        children.append(schema["items"])
    return 1 + sum(_nodes(c) for c in children)


@settings(max_examples=300, deadline=None)
@given(_schemas)
@example({"properties": {"a": {}}, "required": True})  # found by this test: `required` not a list of names
@example({"properties": {}, "required": [[]]})
@example({"properties": "0", "allOf": [None]})
@example({"properties": True, "allOf": [None]})
@example({"allOf": [{"properties": True, "required": 1}, {"properties": {"a": {}}, "required": [[], "a"]}]})
@example({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})
@example({"$defs": {"a": {"items": [{"$ref": "#/$defs/a"}]}}, "properties": {"x": {"$ref": "#/$defs/a"}}})
def test_any_schema_cleans_to_gemini_keywords_only(schema):
    """Any schema becomes Gemini keywords only, within the bounds, or is a 400 naming its param."""
    if not isinstance(schema, dict):
        return
    try:
        cleaned = gemini_schema.gemini_schema(schema, "tools[0].function.parameters")
    except GatewayError as error:
        assert error.status == 400 and error.param == "tools[0].function.parameters"
        assert error.code in ("schema_ref_cycle", "schema_too_large", "schema_too_deep")
        return
    assert _schema_keys_ok(cleaned)
    assert _nodes(cleaned) <= gemini_schema.MAX_SCHEMA_NODES
    orjson.dumps(cleaned)


def doubling_refs(depth: int) -> dict:
    """Each `$defs` entry refers to the next twice: inlined, it doubles at every level (2^depth copies)."""
    defs = {f"d{i}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/d{i + 1}"},
                                                       "b": {"$ref": f"#/$defs/d{i + 1}"}}} for i in range(depth)}
    defs[f"d{depth}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "properties": {"x": {"$ref": "#/$defs/d0"}}}


async def test_gemini_ref_inlining_that_doubles_at_each_level_is_a_400_and_healthz_answers_meanwhile(
        gateway, upstream):
    """The 2.3 KB request that made the inlining exponential and stalled every client: now a 400 naming the tool,
    decided within a fixed number of produced nodes, while /healthz answers."""
    tools = [WEATHER, {"type": "function", "function": {"name": "deep", "parameters": doubling_refs(20)}}]
    body = orjson.dumps({"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}],
                         "tools": tools})
    assert len(body) < 2600
    async with asyncio.timeout(BOUND):
        chat, health = await asyncio.gather(gateway.post("/v2/chat/completions", data=body, headers=JSON),
                                            gateway.get("/healthz"))
        assert health.status == 200
        assert chat.status == 400, await chat.text()
        error = (await chat.json())["error"]
    assert error["param"] == "tools[1].function.parameters" and error["code"] == "schema_too_large"
    assert upstream.received == []


async def test_gemini_recursive_ref_is_refused_naming_the_tool(gateway, upstream):
    tree = {"type": "object", "$defs": {"Node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}, "properties": {"root": {
            "$ref": "#/$defs/Node"}}}
    error = await rejected(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}], "tools": [
        WEATHER, WEATHER, {"type": "function", "function": {"name": "tree", "parameters": tree}}]})
    assert error["param"] == "tools[2].function.parameters" and error["code"] == "schema_ref_cycle"
    assert "#/$defs/Node" in error["message"]


async def test_gemini_long_ref_chain_is_refused_as_too_deep_not_a_500(gateway, upstream):
    chain = {"$defs": {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(1500)}, "type": "object",
             "properties": {"x": {"$ref": "#/$defs/d0"}}}
    error = await rejected(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "chain", "parameters": chain}}]})
    assert error["param"] == "tools[0].function.parameters" and error["code"] == "schema_too_deep"


async def test_gemini_text_copied_by_ref_inlining_is_bounded_too(gateway, upstream):
    """Few nodes, but each copy of a definition carries its long description: the text is counted as well."""
    long_text = "x" * 20_000
    parameters = {"type": "object", "$defs": {"Big": {"type": "string", "description": long_text}},
                  "properties": {f"p{i}": {"$ref": "#/$defs/Big"} for i in range(60)}}
    error = await rejected(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "big", "parameters": parameters}}]})
    assert error["param"] == "tools[0].function.parameters" and error["code"] == "schema_too_large"


async def test_gemini_response_schema_shares_the_requests_schema_budget(gateway, upstream):
    half = doubling_refs(11)  # 8,191 nodes: one fits, two do not
    assert gemini_schema.gemini_schema(half)
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": half}}
    error = await rejected(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": doubling_refs(11)}}],
        "response_format": response_format})
    assert error["param"] == "response_format.json_schema.schema" and error["code"] == "schema_too_large"


@pytest.mark.parametrize(("tool_choice", "config", "declared"), [
    ("auto", {"mode": "AUTO"}, ["get_weather", "get_time"]),
    ("none", {"mode": "NONE"}, ["get_weather", "get_time"]),
    ("required", {"mode": "ANY"}, ["get_weather", "get_time"]),
    ({"type": "function", "function": {"name": "get_time"}}, {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
     ["get_weather", "get_time"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}},
     {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}, ["get_weather", "get_time"]),
    ({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        {"type": "function", "function": {"name": "get_time"}}]}}, {"mode": "AUTO"}, ["get_time"]),
])
async def test_tool_choice_variants(gateway, upstream, tool_choice, config, declared):
    received = await sent(gateway, upstream, {"messages": [{"role": "user", "content": "hi"}],
                                              "tools": STRICT_TOOLS, "tool_choice": tool_choice})
    assert received.body["toolConfig"] == {"functionCallingConfig": config}
    assert [d["name"] for d in received.body["tools"][0]["functionDeclarations"]] == declared


# ---------------------------------------------------------------------------------------------------
# Through the gateway


async def test_malformed_function_call_before_content_is_a_502(gateway, upstream):
    upstream.stream(gemini_wire(gemini_answer(finish="MALFORMED_FUNCTION_CALL")))
    response = await gateway.post("/v2/chat/completions", json={
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_invalid_function_call"


GEMINI_ERRORS = [
    (400, {"error": {"code": 400, "message": "* GenerateContentRequest.contents: contents is not specified\n",
                     "status": "INVALID_ARGUMENT"}}, 400, "upstream_bad_request"),
    (404, {"error": {"code": 404, "message": "models/gemini-9 is not found for API version v1beta, or is not "
                     "supported for generateContent.", "status": "NOT_FOUND"}}, 404, "upstream_not_found"),
    (429, {"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing "
                     "details.", "status": "RESOURCE_EXHAUSTED", "details": [
                         {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}},
     429, "upstream_rate_limited"),
    (500, {"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}},
     502, "upstream_error"),
    (503, [{"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                      "status": "UNAVAILABLE"}}], 502, "upstream_error"),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize(("status", "body", "client_status", "code"), GEMINI_ERRORS,
                         ids=[str(e[0]) for e in GEMINI_ERRORS])
async def test_gemini_http_errors_map_to_openai_errors(gateway, upstream, stream, status, body, client_status, code):
    upstream.queue(Reply(status=status, headers=JSON, steps=[orjson.dumps(body)]))
    response = await gateway.post("/v2/chat/completions", json={
        "model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status == client_status
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    gemini_message = (body[0] if isinstance(body, list) else body)["error"]["message"].strip()
    assert "'gem'" in error["message"] and gemini_message in error["message"]


@pytest.fixture
def sdk(gateway):
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="unused-by-the-gateway", max_retries=0)


@pytest.mark.parametrize("case", ["text-cumulative-usage", "thinking-thought-parts", "multibyte-split",
                                  "function-calls-parallel", "function-call-thought-signature", "two-candidates"])
async def test_sdk_stream_helper_accumulates_converted_gemini_streams(case, upstream, sdk):
    upstream.stream((GOLDEN / f"{case}.upstream.sse").read_bytes(), split=11)
    request = orjson.loads((GOLDEN / f"{case}.request.json").read_bytes())
    options = {k: v for k, v in request.items() if k in ("n", "stream_options", "reasoning_effort")}
    if "tools" in request:
        options["tools"] = STRICT_TOOLS  # strict tools make the helper parse the arguments
    async with sdk.chat.completions.stream(model=request["model"], messages=request["messages"], **options) as stream:
        async for _ in stream:
            pass
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    if case == "function-calls-parallel":
        assert message.content == "Checking both."
        assert [c.function.parsed_arguments for c in message.tool_calls] == [{"city": "Paris"}, {"tz": "Europe/Paris"}]
        assert completion.choices[0].finish_reason == "tool_calls"
    elif case == "function-call-thought-signature":
        assert message.tool_calls[0].function.parsed_arguments == {"city": "Oslo"}
        assert message.tool_calls[0].model_dump()["extra_content"] == {
            "google": {"thought_signature": "CpwBAXLI2nz3Qk5mL0tCg+Sig/Xy=="}}
    elif case == "multibyte-split":
        assert message.content == "Grüße, 世界 🙂👍🏽 ok"
    elif case == "two-candidates":
        assert [c.message.content for c in completion.choices] == ["Red.", "Blue sky."]
    else:
        assert message.content and completion.choices[0].finish_reason == "stop"
    if case == "thinking-thought-parts":
        assert message.model_dump()["reasoning_content"].startswith("**Weighing the question**")
        assert completion.usage.completion_tokens_details.reasoning_tokens == 66
    if case == "text-cumulative-usage":
        assert completion.usage.total_tokens == 16


async def test_sdk_round_trip_sends_the_thought_signature_back(upstream, sdk):
    upstream.stream((GOLDEN / "function-call-thought-signature.upstream.sse").read_bytes())
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    async with sdk.chat.completions.stream(model="gem/gemini-3-pro-preview", messages=messages,
                                           tools=STRICT_TOOLS[:1]) as stream:
        completion = await stream.get_final_completion()
    message = completion.choices[0].message
    call = message.tool_calls[0]
    upstream.stream(gemini_wire(gemini_answer({"text": "12 degrees in Oslo."})))
    follow_up = await sdk.chat.completions.create(model="gem/gemini-3-pro-preview", tools=STRICT_TOOLS[:1], messages=[
        *messages, message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 12}'}])
    assert follow_up.choices[0].message.content == "12 degrees in Oslo."
    assert upstream.received[1].body["contents"][1:] == [
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                                     "thoughtSignature": "CpwBAXLI2nz3Qk5mL0tCg+Sig/Xy=="}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 12}}}]}]
    declaration = upstream.received[1].body["tools"][0]["functionDeclarations"][0]
    assert declaration == {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


# ---------------------------------------------------------------------------------------------------
# Conformance: every Gemini recording, replayed through the gateway, against a naive reading of it


def _recordings() -> list[str]:
    try:
        root = recordings_dir()
    except BaseException:  # skipped or failed here: let the test itself report it
        return ["<missing>"]
    return sorted(p.name for p in (root / "gemini").iterdir() if p.suffix in (".sse", ".jsonl"))


def _responses(name: str) -> list[bytes]:
    """The recording as Gemini sent it, one stream per response (a JSONL file may hold several turns)."""
    path = recordings_dir() / "gemini" / name
    if path.suffix == ".sse":
        return [path.read_bytes()]
    streams: dict[str, bytearray] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            response_id = orjson.loads(line).get("responseId", "")
            streams.setdefault(response_id, bytearray()).extend(b"data: " + line + b"\r\n\r\n")
    return [bytes(s) for s in streams.values()]


def _naive_args(function: dict, pieces: dict) -> None:
    """Flat `$.name` paths only: enough for the recorded Vertex stream, and independent of the adapter."""
    for piece in function.get("partialArgs", ()):
        key = piece["jsonPath"].removeprefix("$.")
        if "stringValue" in piece:
            pieces[key] = pieces.get(key, "") + piece["stringValue"]
        else:
            pieces[key] = piece.get("numberValue", piece.get("boolValue"))


def naive_gemini(body: bytes) -> dict:
    out: dict = {"choices": {}, "usage": None, "blocked": None, "model": None}
    for event in SSEDecoder().feed(body):
        payload = orjson.loads(event.data)
        out["model"] = out["model"] or payload.get("modelVersion")
        meta = payload.get("usageMetadata") or {}
        if "totalTokenCount" in meta:
            completion = meta.get("candidatesTokenCount", 0) + meta.get("thoughtsTokenCount", 0)
            out["usage"] = {"prompt_tokens": meta.get("promptTokenCount", 0), "completion_tokens": completion,
                            "total_tokens": meta["totalTokenCount"]}
        if "promptFeedback" in payload and not payload.get("candidates"):
            out["blocked"] = payload["promptFeedback"]["blockReason"]
        for candidate in payload.get("candidates", ()):
            slot = out["choices"].setdefault(candidate.get("index", 0), {
                "content": "", "reasoning": "", "tools": [], "finish": None, "streaming": None})
            for part in candidate.get("content", {}).get("parts", ()):
                if "text" in part:
                    slot["reasoning" if part.get("thought") else "content"] += part["text"]
                elif "functionCall" in part:
                    function = part["functionCall"]
                    if function.get("name"):
                        slot["tools"].append({"name": function["name"], "arguments": function.get("args", {})})
                    if "partialArgs" in function or function.get("willContinue"):
                        _naive_args(function, slot["tools"][-1]["arguments"])
            if candidate.get("finishReason"):
                reason = candidate["finishReason"]
                slot["finish"] = {"STOP": "tool_calls" if slot["tools"] else "stop", "MAX_TOKENS": "length",
                                  "SAFETY": "content_filter"}[reason]
    return out


@pytest.mark.parametrize("name", _recordings())
async def test_gemini_recording_replays_through_gateway(name, upstream, gateway):
    for body in _responses(name):
        upstream.received.clear()
        expected = naive_gemini(body)
        upstream.stream(body, split=97)
        response = await gateway.post("/v2/chat/completions", json={
            "model": f"gem/{expected['model']}", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]})
        assert upstream.received[0].path == f"/v1beta/models/{expected['model']}:streamGenerateContent?alt=sse"
        if expected["blocked"]:  # prompt-blocked.SYNTHETIC: nothing was generated, so a plain HTTP error
            assert response.status == 400
            error = (await response.json())["error"]
            assert error["code"] == "content_filter" and expected["blocked"] in error["message"]
            continue
        assert response.status == 200, await response.text()
        raw = await asyncio.wait_for(read_events(response), BOUND)
        assert raw[-1] == b"data: [DONE]"
        got = reassemble(decode(b"\n\n".join(raw)))
        assert got["error"] is None
        assert got["usage"] == expected["usage"]
        assert set(got["choices"]) == set(expected["choices"])
        for index, want in expected["choices"].items():
            have = got["choices"][index]
            assert have["content"] == want["content"]
            assert have["reasoning"] == want["reasoning"]
            assert have["refusal"] == ""
            tools = [{"name": t["name"], "arguments": orjson.loads(t["arguments"])} for t in have["tools"]]
            assert tools == want["tools"]
            assert have["finish"] == want["finish"]


async def test_gemini_bad_key_400_is_an_auth_failure_and_retry_delay_becomes_retry_after(upstream, gateway):
    from tests.fakes.upstream import Reply

    bad_key = orjson.dumps({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
                                      "status": "INVALID_ARGUMENT", "details": [
                                          {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}})
    upstream.queue(Reply(status=400, headers={"Content-Type": "application/json"}, steps=[bad_key]))
    body = {"model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}
    response = await gateway.post("/v2/chat/completions", json=body)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_auth_failed"

    exhausted = orjson.dumps({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
                                        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                                     "retryDelay": "36.5s"}]}})
    upstream.queue(Reply(status=429, headers={"Content-Type": "application/json"}, steps=[exhausted]))
    response = await gateway.post("/v2/chat/completions", json=body)
    assert response.status == 429
    assert response.headers["Retry-After"] == "37"


async def test_non_stream_answer_keeps_the_thought_signature_on_tool_calls(upstream, gateway):
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "gemini" / "function-call-thought-signature.upstream.sse"
    upstream.stream(golden.read_bytes())
    response = await gateway.post("/v2/chat/completions", json={
        "model": "gem/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    call = (await response.json())["choices"][0]["message"]["tool_calls"][0]
    assert call["extra_content"]["google"]["thought_signature"]
