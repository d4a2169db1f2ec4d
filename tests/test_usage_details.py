"""Usage in OpenAI's terms, streamed (the last chunk) and combined, through the real OpenAI SDK:
prompt_tokens counts every input token billed, cached_tokens only those read from the cache, cache writes
apart (`prompt_tokens_details.cache_creation_tokens`), reasoning_tokens for Gemini's thinking."""

from __future__ import annotations

import openai
import pytest

from tests.anthropic_wire import message, text_block
from tests.fakes.upstream import sse

QUESTION = [{"role": "user", "content": "hi"}]
CACHED = {"input_tokens": 10, "cache_read_input_tokens": 300, "cache_creation_input_tokens": 40}


@pytest.fixture
def sdk(gateway):
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="unused-by-the-gateway", max_retries=0)


def check_anthropic_usage(usage) -> None:
    assert usage.prompt_tokens == 10 + 300 + 40
    assert usage.prompt_tokens_details.cached_tokens == 300  # read from the cache, not written to it
    assert usage.prompt_tokens_details.model_extra["cache_creation_tokens"] == 40
    assert usage.completion_tokens == 7 and usage.total_tokens == 350 + 7


async def test_anthropic_cache_creation_tokens_are_not_cached_tokens_combined(upstream, sdk):
    upstream.stream(message(text_block(0, "Hi"), usage=CACHED))
    completion = await sdk.chat.completions.create(model="ant/claude-sonnet-4-5", messages=QUESTION)
    check_anthropic_usage(completion.usage)


async def test_anthropic_cache_creation_tokens_are_not_cached_tokens_streamed(upstream, sdk):
    upstream.stream(message(text_block(0, "Hi"), usage=CACHED), split=9)
    stream = await sdk.chat.completions.create(model="ant/claude-sonnet-4-5", messages=QUESTION, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    check_anthropic_usage(chunks[-1].usage)


async def test_gemini_usage_counts_cached_prompt_and_thinking_tokens(upstream, sdk):
    upstream.stream(sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]},
                                         "finishReason": "STOP", "index": 0}], "responseId": "r1",
                         "usageMetadata": {"promptTokenCount": 50, "cachedContentTokenCount": 30,
                                           "candidatesTokenCount": 2, "thoughtsTokenCount": 11,
                                           "totalTokenCount": 63}}, done=False))
    completion = await sdk.chat.completions.create(model="gem/gemini-2.5-flash", messages=QUESTION,
                                                   reasoning_effort="low")
    usage = completion.usage
    assert usage.prompt_tokens == 50 and usage.prompt_tokens_details.cached_tokens == 30
    assert usage.completion_tokens == 13 and usage.completion_tokens_details.reasoning_tokens == 11
    assert usage.total_tokens == 63


async def test_anthropic_thinking_tokens_are_reasoning_tokens(upstream, sdk):
    upstream.stream(message(text_block(0, "Hi"), final_usage={"output_tokens_details": {"thinking_tokens": 5}}),
                    split=9)
    stream = await sdk.chat.completions.create(model="ant/claude-sonnet-4-5", messages=QUESTION, stream=True,
                                               reasoning_effort="low", stream_options={"include_usage": True})
    usage = [chunk async for chunk in stream][-1].usage
    assert usage.completion_tokens == 7 and usage.completion_tokens_details.reasoning_tokens == 5


async def test_gemini_tool_use_prompt_tokens_are_prompt_tokens(upstream, sdk):
    upstream.stream(sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]},
                                         "finishReason": "STOP", "index": 0}], "responseId": "r1",
                         "usageMetadata": {"promptTokenCount": 50, "toolUsePromptTokenCount": 120,
                                           "candidatesTokenCount": 2, "totalTokenCount": 172}}, done=False))
    usage = (await sdk.chat.completions.create(model="gem/gemini-2.5-flash", messages=QUESTION)).usage
    assert usage.prompt_tokens == 170 and usage.total_tokens == 172


@pytest.mark.parametrize("model, expected", [
    ("ant/claude-sonnet-4-5", lambda body: (body["max_tokens"], body["thinking"], "temperature" in body)),
    ("gem/gemini-2.5-flash", lambda body: (body["generationConfig"]["maxOutputTokens"],
                                          body["generationConfig"]["thinkingConfig"], False)),
])
async def test_reasoning_effort_from_the_sdk_fits_the_output_limit_on_every_provider(upstream, sdk, model, expected):
    """The SDK's own `reasoning_effort` with a max_tokens smaller than the budget: the limit is raised by the
    budget, and Anthropic gets no temperature beside thinking."""
    if model.startswith("ant/"):
        upstream.stream(message(text_block(0, "Hi")))
    else:
        upstream.stream(sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]},
                                             "finishReason": "STOP", "index": 0}], "responseId": "r1"}))
    completion = await sdk.chat.completions.create(model=model, messages=QUESTION, reasoning_effort="high",
                                                   max_tokens=3000, temperature=0.5)
    assert completion.choices[0].message.content == "Hi"
    limit, thinking, has_temperature = expected(upstream.received[-1].body)
    assert limit == 3000 + 24576
    assert thinking in ({"type": "enabled", "budget_tokens": 24576}, {"thinkingBudget": 24576, "includeThoughts": True})
    assert not has_temperature
