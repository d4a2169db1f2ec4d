"""Gemini's stream parsing (gateway/providers/gemini_stream.py), one event at a time, without sockets."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError
from gateway.providers import gemini_stream
from tests.conftest import FAKE_KEY
from tests.helpers import gemini_answer, gemini_parse, gemini_state


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("IMAGE_SAFETY", "content_filter"), ("LANGUAGE", "content_filter"), ("OTHER", "stop"),
    ("FINISH_REASON_UNSPECIFIED", "stop"), ("SOMETHING_NEW", "stop"),
])
def test_finish_reasons(reason, expected):
    chunks = gemini_parse(gemini_state(), gemini_answer({"text": "Hi"}, finish=reason))
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, expected]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hi"}  # text with the finish kept


def test_stop_after_a_call_is_tool_calls_but_max_tokens_stays_length():
    call = {"functionCall": {"name": "f", "args": {}}}
    assert gemini_parse(gemini_state(), gemini_answer(call))[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert gemini_parse(gemini_state(), gemini_answer(call, finish="MAX_TOKENS"))[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
def test_failed_function_call_is_an_upstream_error(reason):
    payload = gemini_answer(finish=reason)
    payload["candidates"][0]["finishMessage"] = f"Malformed function call: print(default_api.f(key={FAKE_KEY}))"
    with pytest.raises(GatewayError) as info:
        gemini_parse(gemini_state(), payload)
    assert info.value.status == 502 and info.value.code == "upstream_invalid_function_call"
    assert reason in info.value.message and FAKE_KEY not in info.value.message


def test_tool_call_ids_are_unique_across_candidates_and_indexes_count_per_candidate():
    payload = {"responseId": "r9", "candidates": [
        {"index": 0, "content": {"parts": [{"functionCall": {"name": "a", "args": {"x": 1}}},
                                           {"functionCall": {"name": "b"}}]}},
        {"index": 1, "content": {"parts": [{"functionCall": {"name": "c", "args": {}}}]}}]}
    (chunk,) = gemini_parse(gemini_state(2), payload)
    calls = [(c["index"], call["index"], call["id"], call["function"]["arguments"])
             for c in chunk["choices"] for call in c["delta"]["tool_calls"]]
    assert calls == [(0, 0, "call_r9_0", '{"x":1}'), (0, 1, "call_r9_1", "{}"), (1, 0, "call_r9_2", "{}")]


def test_usage_is_the_last_cumulative_count_sent_once_at_the_end():
    state = gemini_state()
    chunks = gemini_parse(state,
                    {**gemini_answer({"text": "a"}, finish=None),
                     "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}},
                    {**gemini_answer({"text": "b"}, finish=None), "usageMetadata": {"trafficType": "ON_DEMAND"}},
                    {**gemini_answer({"text": "c"}), "usageMetadata": {
                        "promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 7,
                        "cachedContentTokenCount": 2, "totalTokenCount": 15}})
    assert all("usage" not in c for c in chunks)
    (last,) = gemini_stream.finish(state)
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 5, "completion_tokens": 10, "total_tokens": 15,
                             "prompt_tokens_details": {"cached_tokens": 2},
                             "completion_tokens_details": {"reasoning_tokens": 7}}


def test_missing_response_id_and_model_version_are_made_up_once():
    state = gemini_state()
    chunks = gemini_parse(state, {"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
                    {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP"}]})
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"gemini-x"}


def test_malformed_events_are_counted_and_skipped():
    state = gemini_state()
    chunks = gemini_parse(state, b"{not json", b"[1, 2]", gemini_answer({"text": "ok"}, 7, {"functionCall": "x"}))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "ok"}
    assert state.malformed == 4


def test_stream_without_finish_is_truncated():
    state = gemini_state()
    gemini_parse(state, gemini_answer({"text": "half"}, finish=None))
    with pytest.raises(GatewayError) as info:
        gemini_stream.finish(state)
    assert info.value.code == "upstream_truncated"
    two = gemini_state(2)
    gemini_parse(two, gemini_answer({"text": "one"}, index=0))
    with pytest.raises(GatewayError):
        gemini_stream.finish(two)  # n=2 and only one candidate finished


def test_nothing_after_a_candidates_finish_is_kept():
    state = gemini_state()
    chunks = gemini_parse(state, gemini_answer({"text": "done"}), gemini_answer({"text": "again"}))
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": "done"}, {}]


def test_list_wrapped_error_payload_raises():
    with pytest.raises(GatewayError) as info:
        gemini_parse(gemini_state(), b'[{"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}]')
    assert info.value.status == 502 and "Internal error" in info.value.message
