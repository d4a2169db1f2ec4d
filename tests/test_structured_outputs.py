"""Structured outputs through the real OpenAI SDK: `.parse()` and the streaming helper give the parsed
object whichever provider answers (OpenAI, Anthropic natively or through the forced answer tool, Gemini),
and a refusal comes back as `message.refusal`."""

from __future__ import annotations

import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.anthropic_wire import message, text_block, tool_block
from tests.fakes.upstream import chat_chunk, sse

ANSWER = '{"city":"Paris","celsius":21}'
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]


class Weather(BaseModel):
    city: str
    celsius: int


@pytest.fixture
def sdk(gateway):
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="unused-by-the-gateway", max_retries=0)


def openai_answer() -> bytes:
    return sse(chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": ANSWER[:9]}),
               chat_chunk({"content": ANSWER[9:]}), chat_chunk({}, "stop"))


def gemini_answer() -> bytes:
    first = {"candidates": [{"content": {"role": "model", "parts": [{"text": ANSWER[:9]}]}, "index": 0}],
             "responseId": "resp1", "modelVersion": "gemini-2.5-flash"}
    last = {"candidates": [{"content": {"role": "model", "parts": [{"text": ANSWER[9:]}]}, "finishReason": "STOP",
                            "index": 0}], "responseId": "resp1",
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 9, "totalTokenCount": 14}}
    return sse(first, last, done=False)


# model, what the fake provider answers, and where the schema must be in the body the provider got
CASES = {
    "openai": ("up/gpt-4o-mini", openai_answer, lambda body: body["response_format"]["json_schema"]["schema"]),
    "anthropic-native": ("ant/claude-sonnet-4-5", lambda: message(text_block(0, ANSWER[:9], ANSWER[9:])),
                         lambda body: body["output_config"]["format"]["schema"]),
    "anthropic-tool": ("ant/claude-3-5-haiku-latest",
                       lambda: message(tool_block(0, "Weather", ANSWER[:9], ANSWER[9:]), stop_reason="tool_use"),
                       lambda body: body["tools"][0]["input_schema"]),
    "gemini": ("gem/gemini-2.5-flash", gemini_answer, lambda body: body["generationConfig"]["responseSchema"]),
}


@pytest.mark.parametrize("case", CASES)
async def test_sdk_parse_returns_the_parsed_object_on_every_provider(case, upstream, sdk):
    model, answer, schema_of = CASES[case]
    upstream.stream(answer(), split=13)
    completion = await sdk.chat.completions.parse(model=model, messages=QUESTION, response_format=Weather)
    choice = completion.choices[0]
    assert choice.message.parsed == Weather(city="Paris", celsius=21)
    assert choice.finish_reason == "stop" and not choice.message.tool_calls and choice.message.refusal is None
    assert set(schema_of(upstream.received[-1].body)["properties"]) == {"city", "celsius"}


@pytest.mark.parametrize("case", CASES)
async def test_sdk_stream_helper_returns_the_parsed_object_on_every_provider(case, upstream, sdk):
    model, answer, _ = CASES[case]
    upstream.stream(answer(), split=13)
    async with sdk.chat.completions.stream(model=model, messages=QUESTION, response_format=Weather) as stream:
        kinds = [event.type async for event in stream]
        completion = await stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" not in kinds  # the answer tool is never a client tool call
    assert completion.choices[0].message.parsed == Weather(city="Paris", celsius=21)
    assert completion.choices[0].finish_reason == "stop"


async def test_anthropic_answer_tool_with_no_input_is_an_empty_object(upstream, gateway):
    upstream.stream(message(tool_block(0, "json_response"), stop_reason="tool_use"))
    response = await gateway.post("/v1/chat/completions", json={
        "model": "ant/claude-3-5-haiku-latest", "messages": QUESTION, "response_format": {"type": "json_object"}})
    body = await response.json()
    assert body["choices"][0]["message"]["content"] == "{}"
    assert body["choices"][0]["finish_reason"] == "stop" and body["choices"][0]["message"].get("tool_calls") is None


@pytest.mark.parametrize("model", ["ant/claude-sonnet-4-5", "ant/claude-3-5-haiku-latest"])
async def test_anthropic_refusal_of_a_structured_answer_is_message_refusal(model, upstream, sdk):
    upstream.stream(message(stop_reason="refusal"))
    completion = await sdk.chat.completions.parse(model=model, messages=QUESTION, response_format=Weather)
    choice = completion.choices[0]
    assert choice.message.refusal and choice.message.parsed is None and choice.finish_reason == "stop"


async def test_openai_refusal_passes_as_message_refusal(upstream, sdk):
    upstream.stream(sse(chat_chunk({"role": "assistant", "refusal": ""}), chat_chunk({"refusal": "I can't."}),
                        chat_chunk({}, "stop")))
    completion = await sdk.chat.completions.parse(model="up/gpt-4o-mini", messages=QUESTION, response_format=Weather)
    assert completion.choices[0].message.refusal == "I can't." and completion.choices[0].message.parsed is None


async def test_anthropic_client_tools_still_stream_as_tool_calls_beside_native_structured_output(upstream, sdk):
    upstream.stream(message(tool_block(0, "get_weather", '{"city":"Paris"}'), stop_reason="tool_use"))
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    completion = await sdk.chat.completions.create(model="ant/claude-sonnet-4-5", messages=QUESTION, tools=[tool],
                                                   response_format={"type": "json_schema", "json_schema": {
                                                       "name": "Weather", "schema": Weather.model_json_schema()}})
    assert completion.choices[0].finish_reason == "tool_calls"
    assert orjson.loads(completion.choices[0].message.tool_calls[0].function.arguments) == {"city": "Paris"}


@settings(max_examples=60, deadline=None)
@given(answer=st.dictionaries(st.text(max_size=5), st.integers(-10**6, 10**6) | st.text(max_size=8), max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_anthropic_answer_tool_fragments_become_exactly_the_content(answer, cuts):
    """However Anthropic cuts the tool input into input_json_delta fragments, the content is the input,
    and no chunk carries a tool call."""
    from types import SimpleNamespace

    from gateway.providers import anthropic
    from gateway.sse import SSEDecoder

    text = orjson.dumps(answer).decode()
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    fragments = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    body = {"response_format": {"type": "json_object"}}
    ctx = SimpleNamespace(provider=SimpleNamespace(name="ant", secrets=()), endpoint="chat", created=1,
                          model="claude-3-5-haiku-latest", request_id="r1", body=body)
    state = anthropic.new_state(ctx)
    chunks = [c for e in SSEDecoder(1 << 20).feed(message(tool_block(0, "json_response", *fragments),
                                                          stop_reason="tool_use"))
              for c in anthropic.parse_event(e, state)]
    deltas = [ch["delta"] for c in chunks for ch in c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == text
    assert not any("tool_calls" in d for d in deltas)
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]] == ["stop"]
