"""LangChain's ChatOpenAI (langchain-openai), pointed at the gateway: streamed text, tool-call chunks that
add up to parsed tool calls, usage metadata and plain invocations, for OpenAI, Anthropic and Gemini models.
Nothing here counts tokens, so tiktoken never fetches an encoding: the tests need no internet."""

from __future__ import annotations

import functools
import operator
from pathlib import Path

import openai
import orjson
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.fakes.upstream import Reply
from tests.helpers import JSON, anthropic_follow_up, error_body, gemini_follow_up, openai_follow_up

GOLDEN = Path(__file__).parent / "golden"


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    raise AssertionError("the tests only look at the calls the model asks for")


@tool
def get_time(tz: str | None = None) -> str:
    """The current time, in a time zone if given."""
    raise AssertionError("the tests only look at the calls the model asks for")


@pytest.fixture
def chat_model(gateway):
    def make(model: str) -> ChatOpenAI:
        # use_responses_api=False: the gateway serves chat completions, not OpenAI's Responses API
        return ChatOpenAI(model=model, base_url=str(gateway.make_url("/v1")), api_key="unused-by-the-gateway",
                          stream_usage=True, max_retries=0, use_responses_api=False)
    return make


def play(upstream, golden_case: str, split: int | None = 7) -> None:
    upstream.stream((GOLDEN / f"{golden_case}.upstream.sse").read_bytes(), split=split)


async def stream_all(model: ChatOpenAI, prompt: str = "hi", tools: list | None = None) -> list[AIMessageChunk]:
    runnable = model.bind_tools(tools) if tools else model
    return [chunk async for chunk in runnable.astream([HumanMessage(prompt)])]


def added(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    return functools.reduce(operator.add, chunks)


@pytest.mark.parametrize("model, golden_case, text, usage", [
    ("up/gpt-4o-mini", "openai/text-include-usage", "Hello, world!", (12, 5, 17)),
    ("ant/claude-sonnet-4-5", "anthropic/text", "Hello, world!", (25, 6, 31)),
    ("gem/gemini-2.5-flash", "gemini/text-cumulative-usage", "The capital of France is Paris.", (9, 7, 16)),
])
async def test_astream_text_chunks_and_usage(model, golden_case, text, usage, upstream, chat_model):
    play(upstream, golden_case)
    chunks = await stream_all(chat_model(model))
    assert len([c for c in chunks if c.content]) > 1  # streamed, not one block
    message = added(chunks)
    assert message.content == text
    assert message.response_metadata["finish_reason"] == "stop"
    metadata = message.usage_metadata
    assert (metadata["input_tokens"], metadata["output_tokens"], metadata["total_tokens"]) == usage
    assert upstream.received[0].body.get("stream_options") in (None, {"include_usage": True})


async def test_astream_multibyte_characters_split_across_reads(upstream, chat_model):
    play(upstream, "openai/multibyte-split-reads", split=3)
    assert added(await stream_all(chat_model("up/gpt-4o-mini"))).content == "Grüße, 世界 🙂👍🏽 ok"


@pytest.mark.parametrize("model, golden_case, calls", [
    ("up/gpt-4o-mini", "openai/tool-calls-parallel-split-args",
     [("call_AAA", "get_weather", {"city": "Paris"}), ("call_BBB", "get_time", {"tz": "CET"})]),
    ("ant/claude-sonnet-4-5", "anthropic/parallel-tool-calls",
     [("toolu_01A", "get_weather", {"city": "Oslo"}), ("toolu_01B", "get_time", {})]),
    ("gem/gemini-2.5-flash", "gemini/function-calls-parallel",
     [("call_gR8nafO2LJq1vr0PnLaQkQk_0", "get_weather", {"city": "Paris"}),
      ("call_gR8nafO2LJq1vr0PnLaQkQk_1", "get_time", {"tz": "Europe/Paris"})]),
])
async def test_astream_tool_call_chunks_add_up_to_parsed_calls(model, golden_case, calls, upstream, chat_model):
    play(upstream, golden_case)
    chunks = await stream_all(chat_model(model), "weather and time?", [get_weather, get_time])
    message = added(chunks)
    assert [(c["id"], c["name"], c["args"]) for c in message.tool_calls] == calls
    assert message.invalid_tool_calls == []
    assert message.response_metadata["finish_reason"] == "tool_calls"
    if golden_case.startswith("openai/"):  # the tools went through; the argument fragments came as sent
        assert [t["function"]["name"] for t in upstream.received[0].body["tools"]] == ["get_weather", "get_time"]
        fragments = [tc["args"] for c in chunks for tc in c.tool_call_chunks if tc["index"] == 0]
        assert fragments == ["", "{\"ci", "ty\": \"Pa", "ris\"}"]


@pytest.mark.parametrize("model, golden_case, text, total_tokens", [
    ("up/gpt-4o-mini", "openai/non-stream-text", "Grüße, 世界 🙂👍🏽 ok", 17),
    ("ant/claude-sonnet-4-5", "anthropic/text", "Hello, world!", 31),
    ("gem/gemini-2.5-flash", "gemini/text-cumulative-usage", "The capital of France is Paris.", 16),
])
async def test_ainvoke_non_stream(model, golden_case, text, total_tokens, upstream, chat_model):
    play(upstream, golden_case)
    message = await chat_model(model).ainvoke("hi")
    assert message.content == text
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata["total_tokens"] == total_tokens


async def test_ainvoke_tool_calls(upstream, chat_model):
    play(upstream, "gemini/non-stream-tool-calls")
    message = await chat_model("gem/gemini-2.5-flash").bind_tools([get_weather, get_time]).ainvoke("weather?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert message.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("model, first, answer, follow_up, expected", [
    ("up/gpt-4o-mini", "openai/tool-calls-parallel-split-args", "openai/text-include-usage", openai_follow_up,
     [("call_AAA", "get_weather", {"city": "Paris"}), ("call_BBB", "get_time", {"tz": "CET"}),
      ("tool", "call_AAA", {"answer": "get_weather"}), ("tool", "call_BBB", {"answer": "get_time"})]),
    ("ant/claude-sonnet-4-5", "anthropic/parallel-tool-calls", "anthropic/text", anthropic_follow_up,
     [("toolu_01A", "get_weather", {"city": "Oslo"}), ("toolu_01B", "get_time", {}),
      ("tool", "toolu_01A", {"answer": "get_weather"}), ("tool", "toolu_01B", {"answer": "get_time"})]),
    ("gem/gemini-2.5-flash", "gemini/function-calls-parallel", "gemini/text-cumulative-usage", gemini_follow_up,
     [(None, "get_weather", {"city": "Paris"}), (None, "get_time", {"tz": "Europe/Paris"}),
      ("tool", "get_weather", {"answer": "get_weather"}), ("tool", "get_time", {"answer": "get_time"})]),
])
async def test_tool_results_sent_back_reach_the_provider(model, first, answer, follow_up, expected, upstream,
                                                         chat_model):
    """The usual agent loop: the AI message with its tool calls and one ToolMessage per call go back."""
    play(upstream, first)
    play(upstream, answer)
    runnable = chat_model(model).bind_tools([get_weather, get_time])
    history = [HumanMessage("weather and time?")]
    history.append(added([chunk async for chunk in runnable.astream(history)]))
    history += [ToolMessage(orjson.dumps({"answer": call["name"]}).decode(), tool_call_id=call["id"])
                for call in history[1].tool_calls]
    final = await runnable.ainvoke(history)
    assert final.content in ("Hello, world!", "The capital of France is Paris.")
    assert follow_up(upstream.received[1].body) == expected


async def test_error_mid_stream_raises(upstream, chat_model):
    play(upstream, "anthropic/error-midstream-overloaded")
    with pytest.raises(openai.APIError, match="Overloaded"):
        await stream_all(chat_model("ant/claude-sonnet-4-5"))


async def test_rate_limit_raises_with_its_status(upstream, chat_model):
    upstream.queue(Reply(status=429, headers={**JSON, "retry-after": "7"},
                         steps=[error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")]))
    with pytest.raises(openai.RateLimitError) as info:
        await chat_model("up/gpt-4o-mini").ainvoke("hi")
    assert info.value.status_code == 429 and info.value.code == "upstream_rate_limited"
