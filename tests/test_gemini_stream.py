"""Gemini's stream parsing (gateway/providers/gemini_stream.py), one event at a time, without sockets."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
import pytest

from gateway.errors import GatewayError
from gateway.providers import gemini_stream
from gateway.sse import SSEEvent
from tests.conftest import FAKE_KEY


def answer(*parts: dict, finish: str | None = "STOP", index: int | None = 0, **extra) -> dict:
    candidate: dict = {"content": {"parts": list(parts), "role": "model"}}
    if finish:
        candidate["finishReason"] = finish
    if index is not None:
        candidate["index"] = index
    return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash", "responseId": "resp1", **extra}



def _state(choices: int = 1):
    ctx = SimpleNamespace(provider=SimpleNamespace(name="gem", secrets=(FAKE_KEY,)), choices=choices,
                          endpoint="chat", created=1782955817, model="gemini-x")
    return gemini_stream.State(ctx)


def _parse(state, *payloads) -> list[dict]:
    chunks = []
    for payload in payloads:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        chunks.extend(gemini_stream.parse_event(SSEEvent(data), state))
    return chunks


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"), ("LANGUAGE", "content_filter"), ("OTHER", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"), ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason, expected):
    chunks = _parse(_state(), answer({"text": "Hi"}, finish=reason))
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, expected]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}  # text with the finish kept


def test_stop_after_a_call_is_tool_calls_but_max_tokens_stays_length():
    call = {"functionCall": {"name": "f", "args": {}}}
    assert _parse(_state(), answer(call))[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert _parse(_state(), answer(call, finish="MAX_TOKENS"))[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
def test_failed_function_call_is_an_upstream_error(reason):
    payload = answer(finish=reason)
    payload["candidates"][0]["finishMessage"] = f"Malformed function call: print(default_api.f(key={FAKE_KEY}))"
    with pytest.raises(GatewayError) as info:
        _parse(_state(), payload)
    assert info.value.status == 502 and info.value.code == "upstream_invalid_function_call"
    assert reason in info.value.message and FAKE_KEY not in info.value.message


def test_tool_call_ids_are_unique_across_candidates_and_indexes_count_per_candidate():
    payload = {"responseId": "r9", "candidates": [
        {"index": 0, "content": {"parts": [{"functionCall": {"name": "a", "args": {"x": 1}}},
                                           {"functionCall": {"name": "b"}}]}},
        {"index": 1, "content": {"parts": [{"functionCall": {"name": "c", "args": {}}}]}}]}
    (chunk,) = _parse(_state(2), payload)
    calls = [(c["index"], call["index"], call["id"], call["function"]["arguments"])
             for c in chunk["choices"] for call in c["delta"]["tool_calls"]]
    assert calls == [(0, 0, "call_r9_0", '{"x":1}'), (0, 1, "call_r9_1", "{}"), (1, 0, "call_r9_2", "{}")]


def test_usage_is_the_last_cumulative_count_sent_once_at_the_end():
    state = _state()
    chunks = _parse(state,
                    {**answer({"text": "a"}, finish=None),
                     "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}},
                    {**answer({"text": "b"}, finish=None), "usageMetadata": {"trafficType": "ON_DEMAND"}},
                    {**answer({"text": "c"}), "usageMetadata": {
                        "promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 7,
                        "cachedContentTokenCount": 2, "totalTokenCount": 15}})
    assert all("usage" not in c for c in chunks)
    (last,) = gemini_stream.finish(state)
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15,
                             "prompt_tokens_details": {"cached_tokens": 2},
                             "completion_tokens_details": {"reasoning_tokens": 7}}


def test_missing_response_id_and_model_version_are_made_up_once():
    state = _state()
    chunks = _parse(state, {"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
                    {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}]})
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"gemini-x"}


def test_malformed_events_are_counted_and_skipped():
    state = _state()
    chunks = _parse(state, b"{not json", b"[1, 2]", answer({"text": "ok"}, 7, {"functionCall": "x"}))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "ok"}
    assert state.malformed == 4


def test_stream_without_finish_is_truncated():
    state = _state()
    _parse(state, answer({"text": "half"}, finish=None))
    with pytest.raises(GatewayError) as info:
        gemini_stream.finish(state)
    assert info.value.code == "upstream_truncated"
    two = _state(2)
    _parse(two, answer({"text": "one"}, index=0))
    with pytest.raises(GatewayError):
        gemini_stream.finish(two)  # n=2 and only one candidate finished


def test_nothing_after_a_candidates_finish_is_kept():
    state = _state()
    chunks = _parse(state, answer({"text": "done"}), answer({"text": "again"}))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": "done"}, {}]


def test_list_wrapped_error_payload_raises():
    with pytest.raises(GatewayError) as info:
        _parse(_state(), b'[{"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}]')
    assert info.value.status == 502 and "Internal error" in info.value.message
