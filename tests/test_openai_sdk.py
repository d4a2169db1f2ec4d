"""The official OpenAI Python SDK, pointed at the gateway, accumulates every stream we produce."""

from __future__ import annotations

from pathlib import Path

import openai
import orjson
import pytest

from tests.fakes.upstream import chat_chunk, sse
from tests.helpers import CHAT, ROLE, STRICT_TOOLS

GOLDEN = Path(__file__).parent / "golden" / "openai"
@pytest.fixture
def sdk(gateway):
    return openai.AsyncOpenAI(base_url=str(gateway.make_url("/v1")), api_key="unused-by-the-gateway", max_retries=0)


@pytest.mark.parametrize("case", [
    "text-basic", "text-include-usage", "multibyte-split-reads", "tool-calls-parallel-split-args",
    "tool-call-index-from-one", "groq-x-groq-usage", "groq-reasoning-field", "deepseek-reasoning-content",
    "mistral-content-array", "perplexity-citations", "upstream-comments-ignored", "repeated-finish-reason",
    "two-choices-interleaved", "refusal", "crlf-and-no-space", "malformed-line-skipped",
])
async def test_stream_helper_accumulates_each_converted_stream(case, upstream, sdk):
    upstream.stream((GOLDEN / f"{case}.upstream.sse").read_bytes(), split=11)
    request = orjson.loads((GOLDEN / f"{case}.request.json").read_bytes()) if (
        GOLDEN / f"{case}.request.json").exists() else dict(CHAT)
    request.pop("_split", None)
    options = {k: v for k, v in request.items() if k not in ("stream", "model", "messages", "tools")}
    if "tool" in case:  # strict tools make the helper parse arguments (and refuse a "length" finish)
        options["tools"] = STRICT_TOOLS
    async with sdk.chat.completions.stream(model=request["model"], messages=request["messages"],
                                           **options) as stream:
        async for _ in stream:
            pass
        if case == "repeated-finish-reason":  # the helper refuses to "parse" a cut answer, by design
            with pytest.raises(openai.LengthFinishReasonError) as info:
                await stream.get_final_completion()
            completion = info.value.completion
        else:
            completion = await stream.get_final_completion()
    assert completion.choices
    for choice in completion.choices:
        assert choice.finish_reason in ("stop", "length", "tool_calls")
        message = choice.message
        assert message.content or message.tool_calls or message.refusal
    if case == "tool-calls-parallel-split-args":
        calls = completion.choices[0].message.tool_calls
        assert [c.function.name for c in calls] == ["get_weather", "get_time"]
        assert [c.function.parsed_arguments for c in calls] == [{"city": "Paris"}, {"tz": "CET"}]
    if case == "multibyte-split-reads":
        assert completion.choices[0].message.content == "Grüße, 世界 🙂👍🏽 ok"
    if request.get("stream_options", {}).get("include_usage"):
        assert completion.usage is not None and completion.usage.total_tokens > 0


async def test_create_stream_iterates_chunks_and_usage(upstream, sdk):
    upstream.stream(sse(ROLE, chat_chunk({"content": "Hi"}), chat_chunk({}, "stop"),
                        chat_chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4})))
    stream = await sdk.chat.completions.create(model="up/gpt-4o-mini", messages=CHAT["messages"], stream=True,
                                               stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert chunks[-1].usage.total_tokens == 4


async def test_error_mid_stream_raises_in_the_sdk(upstream, sdk):
    upstream.stream(sse(ROLE, chat_chunk({"content": "Par"}), done=False)
                    + b'event: error\ndata: {"error":{"message":"boom","type":"server_error"}}\n\n')
    stream = await sdk.chat.completions.create(model="up/gpt-4o-mini", messages=CHAT["messages"], stream=True)
    with pytest.raises(openai.APIError, match="boom"):
        async for _ in stream:
            pass


async def test_truncated_stream_raises_in_the_sdk(upstream, sdk):
    upstream.stream(sse(ROLE, chat_chunk({"content": "The answer is"}), done=False))
    stream = await sdk.chat.completions.create(model="up/gpt-4o-mini", messages=CHAT["messages"], stream=True)
    with pytest.raises(openai.APIError, match="incomplete"):
        async for _ in stream:
            pass


async def test_sdk_errors_carry_status_and_code(sdk):
    with pytest.raises(openai.NotFoundError) as info:
        await sdk.chat.completions.create(model="nope/nope", messages=CHAT["messages"])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.chat.completions.create(model="demo/echo", messages=CHAT["messages"], temperature=5)
    assert info.value.param == "temperature"


async def test_non_stream_create_with_demo_tool_call(sdk):
    completion = await sdk.chat.completions.create(model="demo/echo", messages=[
        {"role": "user", "content": "Weather in Oslo?"}], tools=STRICT_TOOLS[:1])
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert orjson.loads(call.function.arguments) == {"city": "Weather in Oslo?"}
    follow_up = await sdk.chat.completions.create(model="demo/echo", messages=[
        {"role": "user", "content": "Weather in Oslo?"},
        completion.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12 degrees"}], tools=STRICT_TOOLS[:1])
    assert "12 degrees" in follow_up.choices[0].message.content


async def test_legacy_completions_stream(upstream, sdk):
    upstream.stream((GOLDEN / "completions-legacy.upstream.sse").read_bytes())
    stream = await sdk.completions.create(model="up/gpt-3.5-turbo-instruct", prompt="Say", stream=True,
                                          stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "The holiday is"
    assert chunks[-1].usage.total_tokens == 8


async def test_models_list(sdk):
    ids = [model.id async for model in sdk.models.list()]
    assert "demo/echo" in ids
