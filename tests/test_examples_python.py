"""The Python client examples (examples/python/), run as their users run them: as scripts, against a gateway
on the demo provider, and against the fake upstream for the faults each one is about."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from tests.fakes.upstream import HANG, RESET, Reply, Sleep, Wait, chat_chunk, sse
from tests.serving import served
from tests.helpers import (EXAMPLES_CLIENT_KEY, EXAMPLES_KEYS, EXAMPLES_PACE, JSON, ScriptRun, cut_inside_characters,
                           error_body, free_port, run_script, via)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "python"
GOLDEN = Path(__file__).parent / "golden"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))
SCRIPT_BOUND = 30  # seconds: a hung script fails the test instead of hanging the suite
USAGE_LINE = re.compile(r"usage: (\d+) prompt \+ (\d+) completion = (\d+) tokens")


async def run(script: str, *args: str, env: dict[str, str] | None = None) -> ScriptRun:
    env = {**{k: v for k, v in os.environ.items() if k not in ("GATEWAY_API_KEY", "GATEWAY_BASE_URL")}, **(env or {})}
    return await run_script([sys.executable, str(EXAMPLES / script), *args], env)


def direct(upstream) -> tuple[str, str]:
    """The fake upstream speaks OpenAI's wire format itself: aimed at it, a client gets its exact bytes,
    cut where the fake cuts them (through the gateway, events arrive whole)."""
    return "--base-url", f"{upstream.url}/v1"


def golden(case: str) -> bytes:
    return (GOLDEN / f"{case}.upstream.sse").read_bytes()


def content(*texts: str) -> list[bytes]:
    return [sse(chat_chunk({"role": "assistant", "content": ""}), done=False)] + [
        sse(chat_chunk({"content": text}), done=False) for text in texts]


FINISH = sse(chat_chunk({}, "stop"))
async def test_every_example_answers_help_with_its_usage():
    assert len(SCRIPTS) == 6
    results = await asyncio.gather(*(run(script, "--help") for script in SCRIPTS))
    for script, result in zip(SCRIPTS, results):
        assert result.code == 0, result.err
        assert result.out.startswith("usage:")
        assert all(option in result.out for option in ("--base-url", "--model", "--api-key")), script


@pytest.mark.parametrize("script", SCRIPTS)
async def test_every_example_sends_the_key_from_gateway_api_key_or_api_key(script, make_gateway):
    gateway = await make_gateway(extra=EXAMPLES_KEYS)
    from_env = await run(script, *via(gateway), env={"GATEWAY_API_KEY": EXAMPLES_CLIENT_KEY})
    assert from_env.code == 0, from_env.err
    # --api-key wins over the variable: a refusal proves the option's key was the one sent
    refused = await run(script, *via(gateway), "--api-key", "wrong", env={"GATEWAY_API_KEY": EXAMPLES_CLIENT_KEY})
    assert refused.code == 1 and "401" in refused.err and "Incorrect API key" in refused.err


# stream_openai_sdk.py


async def test_sdk_example_streams_the_demo_answer_and_its_usage(gateway):
    result = await run("stream_openai_sdk.py", *via(gateway), "Grüße, 世界 🙂")
    assert result.code == 0, result.err
    assert 'You wrote: "Grüße, 世界 🙂"' in result.out
    assert "finish reason: stop" in result.out
    prompt, completion, total = map(int, USAGE_LINE.search(result.out).groups())
    assert prompt == 3 and completion > 10 and total == prompt + completion


async def test_sdk_example_puts_the_demo_tool_call_together(gateway):
    result = await run("stream_openai_sdk.py", *via(gateway), "--tools", "Weather in Oslo?")
    assert result.code == 0, result.err
    assert 'tool call 0: get_weather({"city": "Weather in Oslo?"}) id=call_demo0' in result.out
    assert "finish reason: tool_calls" in result.out


async def test_sdk_example_accumulates_parallel_tool_calls_by_index(upstream, gateway):
    upstream.stream(golden("openai/tool-calls-parallel-split-args"), split=7)
    result = await run("stream_openai_sdk.py", *via(gateway), "--model", "up/gpt-4o-mini", "--tools")
    assert result.code == 0, result.err
    assert 'tool call 0: get_weather({"city": "Paris"}) id=call_AAA' in result.out
    assert 'tool call 1: get_time({"tz": "CET"}) id=call_BBB' in result.out
    assert USAGE_LINE.search(result.out).groups() == ("12", "5", "17")


async def test_sdk_example_reports_an_error_event_mid_stream(upstream, gateway):
    upstream.stream(golden("openai/groq-error-event-after-text"))
    result = await run("stream_openai_sdk.py", *via(gateway), "--model", "up/llama-3.3-70b-versatile")
    assert result.code == 1
    assert "the stream failed after it began: " in result.err and "Tool call validation failed" in result.err


# stream_raw_sse.py


def load_raw_sse_module():
    spec = importlib.util.spec_from_file_location("stream_raw_sse", EXAMPLES / "stream_raw_sse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RAW_SSE = load_raw_sse_module()
SSEReader = RAW_SSE.SSEReader


async def test_raw_sse_example_streams_the_demo_answer(gateway):
    result = await run("stream_raw_sse.py", *via(gateway), "Grüße, 世界 🙂")
    assert result.code == 0, result.err
    assert 'You wrote: "Grüße, 世界 🙂"' in result.out and "finish reason: stop" in result.out
    assert USAGE_LINE.search(result.out)


async def test_raw_sse_example_joins_characters_and_lines_cut_between_reads(upstream):
    upstream.queue(Reply(steps=cut_inside_characters(golden("openai/multibyte-split-reads"))))
    result = await run("stream_raw_sse.py", *direct(upstream), "--model", "gpt-4o-mini")
    assert result.code == 0, result.err
    assert result.out.startswith("Grüße, 世界 🙂👍🏽 ok\n")


async def test_raw_sse_example_ignores_comments_and_reads_crlf(upstream):
    upstream.stream(golden("openai/upstream-comments-ignored"), split=5)
    result = await run("stream_raw_sse.py", *direct(upstream))
    assert result.code == 0, result.err
    assert result.out.startswith("Hi!\n")
    upstream.stream(golden("openai/crlf-and-no-space"), split=5)
    result = await run("stream_raw_sse.py", *direct(upstream))
    assert result.code == 0, result.err
    assert "finish reason: stop" in result.out


async def test_raw_sse_example_reports_an_error_event_mid_stream(upstream, gateway):
    upstream.stream(golden("openai/groq-error-event-after-text"))
    result = await run("stream_raw_sse.py", *via(gateway), "--model", "up/llama-3.3-70b-versatile")
    assert result.code == 1
    assert "Tool call validation failed" in result.err and "(upstream_bad_request)" in result.err
    assert "finish reason" not in result.out


async def test_raw_sse_example_reports_an_http_error_with_its_status(upstream, gateway):
    upstream.queue(Reply(status=429, headers=JSON, steps=[error_body("Slow down", "requests", "rate_limit_exceeded")]))
    result = await run("stream_raw_sse.py", *via(gateway), "--model", "up/gpt-4o-mini")
    assert result.code == 1
    assert result.err.startswith("error: HTTP 429: ") and "Slow down" in result.err


async def test_raw_sse_example_reports_a_stream_cut_without_done(upstream):
    upstream.queue(Reply(steps=[*content("Hello", " there"), RESET]))
    result = await run("stream_raw_sse.py", *direct(upstream))
    assert result.code == 1
    assert result.out.startswith("Hello there")
    assert "the stream was cut, the answer is incomplete" in result.err


# Events as a server could frame them: data lines (a multi-line one joined by "\n"), with comments between.
EVENT_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20)


@given(events=st.lists(st.lists(EVENT_TEXT, min_size=1, max_size=3), max_size=6),
       newline=st.sampled_from(["\n", "\r\n"]), comments=st.booleans(), cuts=st.lists(st.integers(0, 10_000)))
def test_raw_sse_reader_gives_the_same_events_however_the_bytes_are_cut(events, newline, comments, cuts):
    wire = ""
    for lines in events:
        if comments:
            wire += ": keep-alive" + newline + newline
        wire += "".join(f"data: {line}{newline}" for line in lines) + newline
    raw = wire.encode()
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    pieces = [raw[start:end] for start, end in zip([0, *points], [*points, len(raw)])]
    reader = SSEReader()
    got = [data for piece in pieces for data in reader.feed(piece)]
    assert got == ["\n".join(lines) for lines in events]
    assert reader.comments == (len(events) if comments else 0)


# network_interruption.py


async def test_interruption_example_completes_on_the_demo(gateway):
    result = await run("network_interruption.py", *via(gateway))
    assert result.code == 0, result.err
    assert "Hello from the gateway's demo model" in result.out
    assert result.out.rstrip().endswith("--- complete (finish reason: stop)")


@pytest.mark.parametrize("first_reply", [
    Reply(before_headers=RESET),
    Reply(status=503, headers=JSON, steps=[error_body("Overloaded", None, "overloaded")]),
], ids=["reset-before-headers", "503"])
async def test_interruption_example_retries_a_failure_before_the_first_chunk(first_reply, upstream, gateway):
    upstream.queue(first_reply, Reply(steps=[*content("Hello", " again"), FINISH]))
    result = await run("network_interruption.py", *via(gateway), "--model", "up/gpt-4o-mini", "--backoff", "0.01")
    assert result.code == 0, result.err
    assert "attempt 1 failed before the first chunk: HTTP 502" in result.err
    assert result.out == "Hello again\n--- complete (finish reason: stop)\n"
    assert len(upstream.received) == 2


async def test_interruption_example_retries_a_connection_reset_before_the_first_chunk(upstream):
    upstream.queue(Reply(before_headers=RESET), Reply(steps=[*content("Hello"), FINISH]))
    result = await run("network_interruption.py", *direct(upstream), "--backoff", "0.01")
    assert result.code == 0, result.err
    assert "attempt 1 failed before the first chunk: no connection" in result.err
    assert result.out.endswith("--- complete (finish reason: stop)\n")


async def test_interruption_example_gives_up_after_its_retries(upstream, gateway):
    upstream.default = Reply(before_headers=RESET)
    result = await run("network_interruption.py", *via(gateway), "--model", "up/gpt-4o-mini", "--backoff", "0.01",
                       "--retries", "2")
    assert result.code == 1
    assert "(attempt 3, giving up)" in result.err and result.out == ""
    assert len(upstream.received) == 3


async def test_interruption_example_does_not_retry_a_bad_request(gateway):
    result = await run("network_interruption.py", *via(gateway), "--model", "no-such/model", "--backoff", "0.01")
    assert result.code == 1
    assert "HTTP 404" in result.err and "giving up" in result.err and "retrying" not in result.err


@pytest.mark.parametrize("where", ["gateway", "direct"])
async def test_interruption_example_marks_a_stream_cut_after_content_incomplete(where, upstream, gateway):
    """Through the gateway, the cut comes as an error event; aimed at the fake directly, as the connection
    dropping. Either way the text so far is shown, marked incomplete, and not retried."""
    upstream.queue(Reply(steps=[*content("Once upon", " a time"), RESET]))
    target = via(gateway) if where == "gateway" else direct(upstream)
    result = await run("network_interruption.py", *target, "--model", "up/gpt-4o-mini", "--backoff", "0.01")
    assert result.code == 1
    assert result.out.startswith("Once upon a time\n--- INCOMPLETE: ")
    assert "it is not the whole answer" in result.out and "complete (" not in result.out
    assert len(upstream.received) == 1


# cancel.py


async def test_cancel_example_closes_the_upstream_request(upstream, gateway):
    upstream.queue(Reply(steps=[*content(*(f"part{i} " for i in range(10))), Wait(asyncio.Event())]))
    result = await run("cancel.py", *via(gateway), "--model", "up/gpt-4o-mini", "--after", "3")
    assert result.code == 0, result.err
    assert result.out.startswith("part0 part1 part2 \n--- stopped after 3 pieces")
    async with asyncio.timeout(SCRIPT_BOUND):  # a bound on a hang, not a timing check
        await upstream.cut_off_event.wait()
    assert upstream.cut_off == 1 and upstream.completed == 0


async def test_cancel_example_names_the_request_the_gateway_logs_as_cancelled(tmp_path):
    port = free_port()
    config = (f"server: {{host: 127.0.0.1, port: {port}}}\n"
              "providers:\n  - {name: demo, kind: demo, models: [echo], token_interval: 0.05}\n")
    async with served(config, port, tmp_path) as (_, log):
        result = await run("cancel.py", "--base-url", f"http://127.0.0.1:{port}/v1", "--after", "2")
        assert result.code == 0, result.err
        request_id = re.search(r"the gateway logs: request_id=(\w+) \.\.\. outcome=client_disconnected", result.out).group(1)
        line = f"request_id={request_id} chat key=- provider=demo model=echo stream=True tries=1 outcome=client_disconnected"
        async with asyncio.timeout(SCRIPT_BOUND):
            while line not in log.read_text():
                await asyncio.sleep(0.05)


# watchdog.py


async def test_watchdog_example_completes_on_the_demo(gateway):
    result = await run("watchdog.py", *via(gateway))
    assert result.code == 0, result.err
    assert result.out.rstrip().endswith("--- complete (0 keep-alive comment(s) on the way)")


async def test_watchdog_example_gives_up_on_a_stream_alive_with_keepalives_only(upstream, make_gateway):
    gateway = await make_gateway(keepalive=0.05)
    upstream.queue(Reply(steps=[*content("Thinking"), HANG]))
    result = await run("watchdog.py", *via(gateway), "--model", "up/gpt-4o-mini", "--idle-timeout", "0.5")
    assert result.code == 1, result.err
    assert result.out.startswith("Thinking\n--- INCOMPLETE: no progress for 0.5 s (")
    keepalives = int(re.search(r"\((\d+) keep-alive comment\(s\) came meanwhile", result.out).group(1))
    assert keepalives >= 1
    async with asyncio.timeout(SCRIPT_BOUND):  # the watchdog's leaving cancels the upstream request
        await upstream.cut_off_event.wait()


async def test_watchdog_example_calls_a_silent_connection_dead(upstream):
    upstream.queue(Reply(steps=[*content("Thinking"), HANG]))  # aimed at the fake: no keep-alives at all
    result = await run("watchdog.py", *direct(upstream), "--idle-timeout", "30", "--silence-timeout", "0.3")
    assert result.code == 1, result.err
    assert result.out.startswith("Thinking\n--- INCOMPLETE: nothing at all for 0.3 s, not even a keep-alive")


def test_raw_sse_reader_refuses_a_line_without_end():
    """A server that is not sending events (or never ends a line) must not fill the client's memory."""
    reader = SSEReader()
    with pytest.raises(RAW_SSE.IncompleteStream, match="a line longer than"):
        for _ in range(RAW_SSE.MAX_LINE_CHARS // 65536 + 2):
            reader.feed(b"x" * 65536)


# resume_stream.py


async def test_resume_example_drops_mid_stream_and_shows_the_whole_answer_once(upstream, gateway):
    pieces = ["Once", " upon", " a", " time", " there", " was", " a", " stream."]
    steps: list = [sse(chat_chunk({"role": "assistant", "content": ""}), done=False)]
    for piece in pieces:
        steps += [sse(chat_chunk({"content": piece}), done=False), Sleep(EXAMPLES_PACE)]
    upstream.queue(Reply(steps=steps + [FINISH]))
    result = await run("resume_stream.py", *via(gateway), "--drop-after", "2", "--model", "up/gpt-4o-mini")
    assert result.code == 0, result.err
    assert result.out.startswith("".join(pieces) + "\n--- complete (finish reason: stop; resumed 1 time(s))")
    assert re.search(r"connection dropped after event [A-Za-z0-9_-]+\.3; resuming", result.err)
    assert len(upstream.received) == 1 and upstream.completed == 1  # asked once, read to its end


async def test_resume_example_gives_the_demo_answer_whether_it_drops_or_not(gateway):
    whole = await run("resume_stream.py", *via(gateway), "--drop-after", "0", "Grüße, 世界")
    dropped = await run("resume_stream.py", *via(gateway), "--drop-after", "4", "Grüße, 世界")
    assert whole.code == dropped.code == 0, (whole.err, dropped.err)
    text = whole.out.split("\n--- complete")[0]
    assert 'You wrote: "Grüße, 世界"' in text and dropped.out.split("\n--- complete")[0] == text
    assert "resumed 0 time(s)" in whole.out and "resumed 1 time(s)" in dropped.out
