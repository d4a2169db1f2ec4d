"""The Vercel AI SDK (Node.js, `ai` with `@ai-sdk/openai-compatible`), pointed at the gateway, reads every
kind of provider stream we produce and surfaces our errors. It runs examples/vercel-ai/chat.mjs, which
prints a JSON summary of what the SDK made of the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.fakes.upstream import Reply
from tests.node_examples import installed_node
from tests.helpers import JSON, anthropic_follow_up, error_body, gemini_follow_up, openai_follow_up

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "vercel-ai"
GOLDEN = Path(__file__).parent / "golden"
SCRIPT_BOUND = 60  # seconds: a hung script fails the test instead of hanging the suite


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, once examples/vercel-ai/node_modules matches package-lock.json (npm ci otherwise)."""
    return installed_node(EXAMPLE)


async def run_sdk(node: str, gateway, model: str, scenario: str, prompt: str = "hi", *options: str) -> dict:
    process = await asyncio.create_subprocess_exec(
        node, str(EXAMPLE / "chat.mjs"), "--base-url", str(gateway.make_url("/v1")), "--model", model,
        "--scenario", scenario, *options, prompt, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SCRIPT_BOUND)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert stdout, f"chat.mjs printed no summary (exit {process.returncode}):\n{stderr.decode()}"
    summary = orjson.loads(stdout)
    assert process.returncode == (1 if summary["errors"] else 0), stderr.decode()
    return summary


def play(upstream, golden_case: str, split: int | None = 7) -> None:
    """The golden case's upstream bytes, cut into small reads."""
    upstream.stream((GOLDEN / f"{golden_case}.upstream.sse").read_bytes(), split=split)


USAGE_17 = {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17, "reasoningTokens": 0, "cachedInputTokens": 0}


@pytest.mark.parametrize("scenario", ["stream", "generate"])
async def test_openai_text_and_usage(scenario, node, upstream, gateway):
    play(upstream, "openai/text-include-usage")
    summary = await run_sdk(node, gateway, "up/gpt-4o-mini", scenario)
    assert summary["text"] == "Hello, world!"
    assert (summary["finishReason"], summary["rawFinishReason"]) == ("stop", "stop")
    assert summary["usage"] == USAGE_17
    assert summary["errors"] == []
    assert upstream.received[0].body["stream_options"] == {"include_usage": True}


async def test_openai_multibyte_characters_split_across_reads(node, upstream, gateway):
    play(upstream, "openai/multibyte-split-reads", split=3)
    summary = await run_sdk(node, gateway, "up/gpt-4o-mini", "stream")
    assert summary["text"] == "Grüße, 世界 🙂👍🏽 ok"


@pytest.mark.parametrize("scenario", ["tools", "generate-tools"])
async def test_openai_parallel_tool_calls_with_arguments_split_across_reads(scenario, node, upstream, gateway):
    play(upstream, "openai/tool-calls-parallel-split-args")
    summary = await run_sdk(node, gateway, "up/gpt-4o-mini", scenario)
    assert [(c["id"], c["name"], c["input"], c["invalid"]) for c in summary["toolCalls"]] == [
        ("call_AAA", "get_weather", {"city": "Paris"}, False), ("call_BBB", "get_time", {"tz": "CET"}, False)]
    assert summary["finishReason"] == "tool-calls"
    assert summary["usage"]["totalTokens"] == 17
    sent_tools = [t["function"]["name"] for t in upstream.received[0].body["tools"]]
    assert sent_tools == ["get_weather", "get_time"]
    if scenario == "tools":  # the arguments reached the SDK as the provider streamed them, not in one piece
        assert summary["toolInputDeltas"] == {"call_AAA": ["{\"ci", "ty\": \"Pa", "ris\"}"],
                                              "call_BBB": ["{\"tz\": ", "\"CET\"}"]}


@pytest.mark.parametrize("scenario", ["stream", "generate"])
async def test_openai_reasoning_content_becomes_sdk_reasoning(scenario, node, upstream, gateway):
    play(upstream, "openai/deepseek-reasoning-content")
    summary = await run_sdk(node, gateway, "up/deepseek-reasoner", scenario)
    assert (summary["reasoning"], summary["text"]) == ("Let me think.", "Four.")
    assert summary["usage"]["reasoningTokens"] == 5


@pytest.mark.parametrize("scenario", ["stream", "generate"])
async def test_anthropic_text(scenario, node, upstream, gateway):
    play(upstream, "anthropic/text")
    summary = await run_sdk(node, gateway, "ant/claude-sonnet-4-5", scenario)
    assert summary["text"] == "Hello, world!"
    assert summary["finishReason"] == "stop"
    assert summary["usage"]["totalTokens"] == 31
    assert upstream.received[0].path.startswith("/v1/messages")


async def test_anthropic_thinking_then_text(node, upstream, gateway):
    play(upstream, "anthropic/thinking-signature")
    summary = await run_sdk(node, gateway, "ant/claude-sonnet-4-5", "stream")
    assert summary["reasoning"] and summary["text"]
    assert summary["errors"] == []


async def test_anthropic_parallel_tool_use(node, upstream, gateway):
    play(upstream, "anthropic/parallel-tool-calls")
    summary = await run_sdk(node, gateway, "ant/claude-sonnet-4-5", "tools")
    assert summary["text"] == "Checking both."
    assert [(c["id"], c["name"], c["input"]) for c in summary["toolCalls"]] == [
        ("toolu_01A", "get_weather", {"city": "Oslo"}), ("toolu_01B", "get_time", {})]
    assert summary["toolInputDeltas"]["toolu_01A"] == ["{\"ci", "ty\": \"Oslo\"}"]
    assert summary["finishReason"] == "tool-calls"


@pytest.mark.parametrize("scenario", ["stream", "generate"])
async def test_gemini_text_and_cumulative_usage(scenario, node, upstream, gateway):
    play(upstream, "gemini/text-cumulative-usage")
    summary = await run_sdk(node, gateway, "gem/gemini-2.5-flash", scenario)
    assert summary["text"] == "The capital of France is Paris."
    assert summary["usage"] == {"inputTokens": 9, "outputTokens": 7, "totalTokens": 16, "reasoningTokens": 0,
                                "cachedInputTokens": 4}
    assert ":streamGenerateContent" in upstream.received[0].path


async def test_gemini_thought_parts_become_sdk_reasoning(node, upstream, gateway):
    play(upstream, "gemini/thinking-thought-parts")
    summary = await run_sdk(node, gateway, "gem/gemini-2.5-pro", "stream")
    assert summary["reasoning"] == "**Weighing the question**\n\nThe user asks for 17 × 3. 17 × 3 = 51."
    assert summary["text"] == "17 × 3 = 51."
    assert summary["usage"]["reasoningTokens"] == 66


@pytest.mark.parametrize("scenario", ["tools", "generate-tools"])
async def test_gemini_parallel_function_calls(scenario, node, upstream, gateway):
    play(upstream, "gemini/function-calls-parallel")
    summary = await run_sdk(node, gateway, "gem/gemini-2.5-flash", scenario)
    assert [(c["name"], c["input"]) for c in summary["toolCalls"]] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]
    assert summary["finishReason"] == "tool-calls"


WEATHER = {"temperature_c": 12, "sky": "cloudy"}


@pytest.mark.parametrize("model, first, second, options, follow_up, expected", [
    ("up/gpt-4o-mini", "openai/tool-calls-parallel-split-args", "openai/text-include-usage", (), openai_follow_up,
     [("call_AAA", "get_weather", {"city": "Paris"}), ("call_BBB", "get_time", {"tz": "CET"}),
      ("tool", "call_AAA", {"city": "Paris", **WEATHER}), ("tool", "call_BBB", {"tz": "CET", "time": "12:00"})]),
    ("ant/claude-sonnet-4-5", "anthropic/parallel-tool-calls", "anthropic/text", (), anthropic_follow_up,
     [("toolu_01A", "get_weather", {"city": "Oslo"}), ("toolu_01B", "get_time", {}),
      ("tool", "toolu_01A", {"city": "Oslo", **WEATHER}), ("tool", "toolu_01B", {"tz": "UTC", "time": "12:00"})]),
    # the SDK (2.x) sends the thought signature back only under the provider name "google"; the gateway must
    # then give it to Gemini on the call's part
    ("gem/gemini-3-pro-preview", "gemini/function-call-thought-signature", "gemini/text-cumulative-usage",
     ("--provider-name", "google"), gemini_follow_up,
     [("CpwBAXLI2nz3Qk5mL0tCg+Sig/Xy==", "get_weather", {"city": "Oslo"}),
      ("tool", "get_weather", {"city": "Oslo", **WEATHER})]),
])
async def test_agent_runs_the_tools_and_sends_their_results_back(model, first, second, options, follow_up, expected,
                                                                  node, upstream, gateway):
    """A two-step streamText: the SDK runs the tools the model asked for, then sends the whole conversation
    back; the gateway must accept the SDK's follow-up request and give the provider the calls and results."""
    play(upstream, first)
    play(upstream, second)
    summary = await run_sdk(node, gateway, model, "agent", "weather and time?", *options)
    assert summary["steps"] == 2 and summary["errors"] == []
    assert len(summary["toolResults"]) == len(summary["toolCalls"]) > 0
    assert summary["finishReason"] == "stop" and summary["text"].endswith(("Hello, world!", "is Paris."))
    assert len(upstream.received) == 2
    assert follow_up(upstream.received[1].body) == expected


@pytest.mark.parametrize("model, golden_case, message, code", [
    ("up/llama-3.3-70b-versatile", "openai/groq-error-event-after-text", "Tool call validation failed",
     "upstream_bad_request"),
    ("ant/claude-sonnet-4-5", "anthropic/error-midstream-overloaded", "Overloaded", "upstream_error"),
    ("gem/gemini-2.5-flash", "gemini/error-midstream", "The model is overloaded", "upstream_error"),
    ("up/gpt-4o-mini", "openai/truncated-no-finish-reason", "the answer is incomplete", "upstream_truncated"),
])
async def test_error_mid_stream_is_an_sdk_error_not_a_success(model, golden_case, message, code, node, upstream,
                                                              gateway):
    """After text went out the gateway can only send `data: {"error": ...}`: the SDK reports it as an error
    part with finish reason "error", the text so far kept."""
    play(upstream, golden_case)
    summary = await run_sdk(node, gateway, model, "stream")
    assert summary["finishReason"] == "error"
    assert summary["text"]
    [error] = summary["errors"]
    assert message in error["message"] and error["code"] == code


async def test_error_mid_stream_fails_generate_text(node, upstream, gateway):
    play(upstream, "anthropic/error-midstream-overloaded")
    summary = await run_sdk(node, gateway, "ant/claude-sonnet-4-5", "generate")
    [error] = summary["errors"]
    assert error["statusCode"] == 502 and "Overloaded" in error["message"]


@pytest.mark.parametrize("scenario", ["stream", "generate"])
async def test_rate_limit_is_an_api_call_error_with_its_status(scenario, node, upstream, gateway):
    upstream.queue(Reply(status=429, headers={**JSON, "retry-after": "7"},
                         steps=[error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")]))
    summary = await run_sdk(node, gateway, "up/gpt-4o-mini", scenario)
    [error] = summary["errors"]
    assert (error["name"], error["statusCode"], error["isRetryable"]) == ("AI_APICallError", 429, True)
    assert "Rate limit reached" in error["message"] and error["code"] == "upstream_rate_limited"
    assert summary["text"] == "" and len(upstream.received) == 1
