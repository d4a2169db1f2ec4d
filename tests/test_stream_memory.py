"""What an open stream holds: once its first content has arrived no other try can be made, so the
prompt (the client's body, parsed, and the request sent upstream) is let go while the stream goes on."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import pytest

import gateway as gateway_package

from tests.anthropic_wire import event
from tests.fakes.upstream import HANG, Reply, chat_chunk, sse
from tests.helpers import gemini_answer, gemini_wire

BOUND = 10
GATEWAY_DIR = Path(gateway_package.__file__).parent
STREAMS = 8
PROMPT_CHARS = 300_000  # parsed, sent upstream and received by the fake: about 1 MB a stream while held

# The first content of each wire format, then the stream stays open.
OPENAI_START = sse(chat_chunk({"role": "assistant", "content": ""}), chat_chunk({"content": "Hi"}), done=False)
ANTHROPIC_START = (event("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                       "model": "claude-sonnet-4-5", "content": [], "stop_reason": None,
                                                       "usage": {"input_tokens": 10, "output_tokens": 1}}})
                   + event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
                   + event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}))
GEMINI_START = gemini_wire(gemini_answer({"text": "Hi"}, finish=None))
STARTS = {"up/gpt-4o-mini": OPENAI_START, "ant/claude-sonnet-4-5": ANTHROPIC_START, "gem/gemini-2.5-flash": GEMINI_START}


async def _first_content(response) -> None:
    seen = b""
    async with asyncio.timeout(BOUND):
        while b'"content":"Hi"' not in seen:
            data = await response.content.readany()
            assert data, seen
            seen += data


@pytest.mark.parametrize("model", list(STARTS))
async def test_an_open_stream_does_not_hold_its_prompt(make_gateway, upstream, model):
    gateway = await make_gateway(max_body_bytes=4 * PROMPT_CHARS)
    for _ in range(STREAMS):
        upstream.queue(Reply(steps=[STARTS[model], HANG]))
    body = {"model": model, "stream": True, "max_tokens": 100,
            "messages": [{"role": "user", "content": "a" * PROMPT_CHARS}]}
    await _first_content(await gateway.post("/v1/chat/completions", json=body))  # warm: pools, caches
    tracemalloc.start(40)  # deep enough to see the gateway's frame under aiohttp's
    try:
        gc.collect()
        before = tracemalloc.take_snapshot()
        responses = [await gateway.post("/v1/chat/completions", json=body) for _ in range(STREAMS - 1)]
        for response in responses:
            await _first_content(response)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # What the gateway allocated (the fake upstream and the test's client hold their own copies)
    by_gateway = [tracemalloc.Filter(True, f"{GATEWAY_DIR}/*", all_frames=True)]
    held = sum(stat.size_diff for stat in after.filter_traces(by_gateway).compare_to(
        before.filter_traces(by_gateway), "filename"))
    # Holding the prompt costs at least its text twice (the parsed body, the bytes sent) per stream.
    assert held < (STREAMS - 1) * PROMPT_CHARS / 4, f"{held} bytes held by {STREAMS - 1} open streams"
    for response in responses:
        response.close()
