"""No request conversion costs more than the body it came from: the same class as Gemini's `$ref`
inlining (tests/test_gemini.py), looked for in every other adapter's request building."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.providers.demo import MAX_PIECES
from gateway.validation import MAX_NESTING
from tests.helpers import BOUND, GEMINI_OK_STREAM

QUESTION = [{"role": "user", "content": "weather in Oslo"}]


def tool(parameters: dict, name: str = "f") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


async def demo_call(gateway, parameters: dict, **extra) -> dict:
    async with asyncio.timeout(BOUND):
        response = await gateway.post("/v1/chat/completions", json={
            "model": "demo/echo", "messages": QUESTION, "tools": [tool(parameters)], **extra})
        assert response.status == 200, await response.text()
        return (await response.json())["choices"][0]


async def test_demo_required_names_repeated_at_every_level_are_sampled_once(gateway):
    """`required: ["a", "a", ...]` at each level sampled its schema once per repeat: 10^8 calls for
    eight levels, the event loop held for everyone."""
    schema: dict = {"type": "string"}
    for _ in range(8):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"] * 10}
    choice = await demo_call(gateway, schema)
    arguments = orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])
    for _ in range(8):
        assert list(arguments) == ["a"]
        arguments = arguments["a"]
    assert isinstance(arguments, str)


@pytest.mark.parametrize("parameters", [
    {"type": "object", "properties": {"a": {"type": "object", "properties": ["x"]}}},
    {"type": "object", "properties": {"a": {"enum": {"k": 1}}, "b": {"enum": 5}}},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": [["a"], 1, "a"]},
    {"type": "object", "properties": {"a": {"type": "object", "required": {"x": 1}, "properties": {"x": {}}}}},
])
async def test_demo_ignores_schema_keywords_of_the_wrong_type(gateway, parameters):
    choice = await demo_call(gateway, parameters)
    assert choice["finish_reason"] == "tool_calls"
    assert isinstance(orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]), dict)


async def test_demo_answer_is_at_most_max_pieces_long(gateway):
    """Arguments grow with the schema, and every piece is sent to each of n choices: a real model's
    gemini_answer has a maximum length, and so has the demo's."""
    parameters = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}
    choice = await demo_call(gateway, parameters)
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["tool_calls"][0]["function"]["arguments"]) <= MAX_PIECES * 8


def deep_object(levels: int) -> str:
    """A JSON object `levels` deep, as a string: the body's nesting check cannot see inside it."""
    return '{"a":' + "[" * (levels - 1) + "1" + "]" * (levels - 1) + "}"


@pytest.mark.parametrize("model", ["ant/claude-x", "gem/gemini-2.5-flash"])
@pytest.mark.parametrize("levels", [MAX_NESTING + 1, 300])
async def test_tool_call_arguments_nested_deep_inside_their_string_are_a_400(gateway, upstream, model, levels):
    """Parsed for Anthropic and Gemini, arguments 300 levels deep could not be written: a 500."""
    messages = [*QUESTION, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "f", "arguments": deep_object(levels)}}]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    response = await gateway.post("/v1/chat/completions", json={"model": model, "messages": messages})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["param"] == "messages[1].tool_calls[0].function.arguments"
    assert error["code"] == "nesting_too_deep"
    assert upstream.received == []


async def test_gemini_tool_result_nested_too_deep_goes_as_text(gateway, upstream):
    result = deep_object(300)
    messages = [*QUESTION, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": result}]
    upstream.stream(GEMINI_OK_STREAM)
    response = await gateway.post("/v1/chat/completions", json={"model": "gem/gemini-2.5-flash",
                                                                "messages": messages})
    assert response.status == 200, await response.text()
    parts = upstream.received[0].body["contents"][-1]["parts"]
    assert parts == [{"functionResponse": {"name": "f", "response": {"content": result}}}]
