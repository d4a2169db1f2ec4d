"""The Node.js client examples (examples/node/), run under node as their users run them: against a gateway on
the demo provider, and against the fake upstream for the faults each one is about. With CI=true a missing
node or npm fails these tests instead of skipping them."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from tests.fakes.upstream import RESET, Reply, Wait, chat_chunk, sse
from tests.node_examples import installed_node
from tests.helpers import (EXAMPLES_CLIENT_KEY, EXAMPLES_KEYS, JSON, ScriptRun, cut_inside_characters, error_body,
                           run_script, via)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NODE_EXAMPLES = EXAMPLES / "node"
GOLDEN = Path(__file__).parent / "golden"
SCRIPTS = ["openai_sdk.mjs", "fetch_stream.mjs", "abort.mjs", "malformed.mjs"]
SCRIPT_BOUND = 30  # seconds: a hung script fails the test instead of hanging the suite
USAGE_LINE = re.compile(r"usage: (\d+) prompt \+ (\d+) completion = (\d+) tokens")


@pytest.fixture(scope="session")
def node() -> str:
    return installed_node(NODE_EXAMPLES)


async def run(node: str, script: str, *args: str, folder: Path = NODE_EXAMPLES,
              env: dict[str, str] | None = None) -> ScriptRun:
    return await run_script([node, str(folder / script), *args],
                            {"PATH": os.environ["PATH"], **(env or {})})  # no GATEWAY_* from the environment


def direct(upstream) -> tuple[str, str]:
    """Aimed at the fake upstream itself (it speaks OpenAI's wire format), a client gets the fake's exact
    bytes, cut where the fake cuts them, malformed lines included (the gateway would skip those)."""
    return "--base-url", f"{upstream.url}/v1"


def golden(case: str) -> bytes:
    return (GOLDEN / f"{case}.upstream.sse").read_bytes()


def content(*texts: str) -> list[bytes]:
    return [sse(chat_chunk({"role": "assistant", "content": ""}), done=False)] + [
        sse(chat_chunk({"content": text}), done=False) for text in texts]


async def test_every_example_answers_help_with_its_usage(node):
    results = await asyncio.gather(*(run(node, script, "--help") for script in SCRIPTS))
    for script, result in zip(SCRIPTS, results):
        assert result.code == 0, result.err
        assert result.out.startswith(f"usage: node {script}")
        assert all(option in result.out for option in ("--base-url", "--model", "--api-key")), script


async def test_an_unknown_option_prints_the_usage_not_a_stack_trace(node):
    result = await run(node, "fetch_stream.mjs", "--no-such-option")
    assert result.code == 2
    assert "Unknown option '--no-such-option'" in result.err and "usage: node fetch_stream.mjs" in result.err
    assert "    at " not in result.err


async def test_vercel_ai_example_answers_help_with_its_usage():
    """`node chat.mjs --help` used to end in parseArgs' stack trace."""
    node = installed_node(EXAMPLES / "vercel-ai")
    result = await run(node, "chat.mjs", "--help", folder=EXAMPLES / "vercel-ai")
    assert result.code == 0, result.err
    assert result.out.startswith("usage: node chat.mjs") and "--scenario" in result.out and result.err == ""


@pytest.mark.parametrize("script", SCRIPTS)
async def test_every_example_sends_the_key_from_gateway_api_key_or_api_key(script, node, make_gateway):
    gateway = await make_gateway(extra=EXAMPLES_KEYS)
    from_env = await run(node, script, *via(gateway), env={"GATEWAY_API_KEY": EXAMPLES_CLIENT_KEY})
    assert from_env.code == 0, from_env.err
    # --api-key wins over the variable: a refusal proves the option's key was the one sent
    refused = await run(node, script, *via(gateway), "--api-key", "wrong", env={"GATEWAY_API_KEY": EXAMPLES_CLIENT_KEY})
    assert refused.code == 1 and "401" in refused.err and "Incorrect API key" in refused.err


# openai_sdk.mjs


async def test_sdk_example_streams_the_demo_answer_and_its_usage(node, gateway):
    result = await run(node, "openai_sdk.mjs", *via(gateway), "Grüße, 世界 🙂")
    assert result.code == 0, result.err
    assert 'You wrote: "Grüße, 世界 🙂"' in result.out and "finish reason: stop" in result.out
    prompt, completion, total = map(int, USAGE_LINE.search(result.out).groups())
    assert prompt == 3 and completion > 10 and total == prompt + completion


async def test_sdk_example_puts_the_demo_tool_call_together(node, gateway):
    result = await run(node, "openai_sdk.mjs", *via(gateway), "--tools", "Weather in Oslo?")
    assert result.code == 0, result.err
    assert 'tool call 0: get_weather({"city":"Weather in Oslo?"}) id=call_demo0' in result.out
    assert "finish reason: tool_calls" in result.out


async def test_sdk_example_accumulates_parallel_tool_calls_by_index(node, upstream, gateway):
    upstream.stream(golden("openai/tool-calls-parallel-split-args"), split=7)
    result = await run(node, "openai_sdk.mjs", *via(gateway), "--model", "up/gpt-4o-mini", "--tools")
    assert result.code == 0, result.err
    assert 'tool call 0: get_weather({"city":"Paris"}) id=call_AAA' in result.out
    assert 'tool call 1: get_time({"tz":"CET"}) id=call_BBB' in result.out
    assert USAGE_LINE.search(result.out).groups() == ("12", "5", "17")


async def test_sdk_example_reports_an_error_event_mid_stream(node, upstream, gateway):
    upstream.stream(golden("openai/groq-error-event-after-text"))
    result = await run(node, "openai_sdk.mjs", *via(gateway), "--model", "up/llama-3.3-70b-versatile")
    assert result.code == 1
    assert "the stream failed after it began: " in result.err and "Tool call validation failed" in result.err


# fetch_stream.mjs


async def test_fetch_example_streams_the_demo_answer(node, gateway):
    result = await run(node, "fetch_stream.mjs", *via(gateway), "Grüße, 世界 🙂")
    assert result.code == 0, result.err
    assert 'You wrote: "Grüße, 世界 🙂"' in result.out and "finish reason: stop" in result.out
    assert USAGE_LINE.search(result.out)


async def test_fetch_example_joins_characters_and_lines_cut_between_reads(node, upstream):
    upstream.queue(Reply(steps=cut_inside_characters(golden("openai/multibyte-split-reads"))))
    result = await run(node, "fetch_stream.mjs", *direct(upstream))
    assert result.code == 0, result.err
    assert result.out.startswith("Grüße, 世界 🙂👍🏽 ok\n")


async def test_fetch_example_skips_comments_and_reads_crlf(node, upstream):
    upstream.stream(golden("openai/upstream-comments-ignored"), split=5)
    upstream.stream(golden("openai/crlf-and-no-space"), split=5)
    comments, crlf = [await run(node, "fetch_stream.mjs", *direct(upstream)) for _ in range(2)]
    assert comments.code == 0 and comments.out.startswith("Hi!\n"), comments.err
    assert crlf.code == 0 and "finish reason: stop" in crlf.out, crlf.err


async def test_fetch_example_reports_an_error_event_mid_stream(node, upstream, gateway):
    upstream.stream(golden("openai/groq-error-event-after-text"))
    result = await run(node, "fetch_stream.mjs", *via(gateway), "--model", "up/llama-3.3-70b-versatile")
    assert result.code == 1
    assert "Tool call validation failed" in result.err and "(upstream_bad_request)" in result.err
    assert "finish reason" not in result.out


async def test_fetch_example_reports_an_http_error_with_its_status(node, upstream, gateway):
    upstream.queue(Reply(status=429, headers=JSON, steps=[error_body("Slow down", "requests", "rate_limit_exceeded")]))
    result = await run(node, "fetch_stream.mjs", *via(gateway), "--model", "up/gpt-4o-mini")
    assert result.code == 1
    assert result.err.startswith("error: HTTP 429: ") and "Slow down" in result.err


async def test_fetch_example_reports_a_stream_cut_without_done(node, upstream):
    upstream.queue(Reply(steps=[*content("Hello", " there"), RESET]))
    result = await run(node, "fetch_stream.mjs", *direct(upstream))
    assert result.code == 1
    assert result.out.startswith("Hello there")
    assert "the stream failed, the answer is incomplete" in result.err


# abort.mjs


async def test_abort_example_stops_the_demo_answer(node, gateway):
    result = await run(node, "abort.mjs", *via(gateway), "--after", "3")
    assert result.code == 0, result.err
    assert re.search(r"\n--- stopped after 3 pieces; the gateway logs: request \w+ \.\.\. outcome=client_disconnected",
                     result.out)


async def test_abort_example_closes_the_upstream_request(node, upstream, gateway):
    upstream.queue(Reply(steps=[*content(*(f"part{i} " for i in range(10))), Wait(asyncio.Event())]))
    result = await run(node, "abort.mjs", *via(gateway), "--model", "up/gpt-4o-mini", "--after", "3")
    assert result.code == 0, result.err
    assert result.out.startswith("part0 part1 part2 \n--- stopped after 3 pieces")
    async with asyncio.timeout(SCRIPT_BOUND):  # a bound on a hang, not a timing check
        await upstream.cut_off_event.wait()
    assert upstream.cut_off == 1 and upstream.completed == 0


# malformed.mjs


async def test_malformed_example_skips_and_counts_a_line_that_is_not_json(node, upstream):
    upstream.stream(golden("openai/malformed-line-skipped"), split=9)
    result = await run(node, "malformed.mjs", *direct(upstream))
    assert result.code == 0, result.err
    assert "finish reason: stop" in result.out and "skipped 1 malformed event(s)" in result.out
    assert result.err.count("[skipped a malformed event: ") == 1


async def test_malformed_example_skips_json_that_is_not_a_chunk_and_goes_on(node, upstream):
    upstream.queue(Reply(steps=[*content("Hello"), b"data: [1, 2]\n\n", b"data: null\n\n", b"data: {oops\n\n",
                                *content(" world")[1:], sse(chat_chunk({}, "stop"))]))
    result = await run(node, "malformed.mjs", *direct(upstream))
    assert result.code == 0, result.err
    assert result.out.startswith("Hello world\n") and "skipped 3 malformed event(s)" in result.out


async def test_malformed_example_on_the_demo_skips_nothing(node, gateway):
    result = await run(node, "malformed.mjs", *via(gateway))
    assert result.code == 0, result.err
    assert "Hello from the gateway's demo model" in result.out and "skipped 0 malformed event(s)" in result.out
