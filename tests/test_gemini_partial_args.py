"""Vertex's streamed function arguments (gateway/providers/gemini_partial_args.py): assembled into one
call, through the stream parser and on their own, with a property test over any way of cutting them."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import GatewayError
from gateway.providers.gemini_partial_args import PendingCall, add_partial_arg, json_path
from tests.helpers import gemini_answer, gemini_parse, gemini_state


def test_vertex_partial_args_are_assembled_into_one_call():
    """Vertex's streamFunctionCallArguments: pieces by JSON path, emitted whole when the call is complete."""
    state = gemini_state()
    chunks = gemini_parse(
        state,
        gemini_answer({"functionCall": {"name": "plan", "willContinue": True}, "thoughtSignature": "S1"}, finish=None),
        gemini_answer({"functionCall": {"willContinue": True, "partialArgs": [
            {"jsonPath": "$.trip.stops[1]", "stringValue": "Ber", "willContinue": True},
            {"jsonPath": "$.trip.stops[1]", "stringValue": "gen"},
            {"jsonPath": "$.trip.stops[0]", "stringValue": "Oslo"},
            {"jsonPath": "$['max days']", "numberValue": 3},
            {"jsonPath": "$.train", "boolValue": True},
            {"jsonPath": "$.budget", "nullValue": "NULL_VALUE"}]}}, finish=None),
        gemini_answer({"functionCall": {}}),
    )
    calls = [call for c in chunks for choice in c["choices"] for call in choice["delta"].get("tool_calls", ())]
    assert len(calls) == 1
    assert calls[0]["function"]["name"] == "plan"
    assert orjson.loads(calls[0]["function"]["arguments"]) == {
        "trip": {"stops": ["Oslo", "Bergen"]}, "max days": 3, "train": True, "budget": None}
    assert calls[0]["extra_content"] == {"google": {"thought_signature": "S1"}}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("piece", [{"jsonPath": "a.b", "stringValue": "x"}, {"jsonPath": "$.a"},
                                   {"jsonPath": "$..a", "stringValue": "x"}])
def test_unusable_partial_args_fail_instead_of_guessing(piece):
    state = gemini_state()
    gemini_parse(state, gemini_answer({"functionCall": {"name": "f", "willContinue": True}}, finish=None))
    with pytest.raises(GatewayError) as info:
        gemini_parse(state, gemini_answer({"functionCall": {"partialArgs": [piece], "willContinue": True}}, finish=None))
    assert info.value.code == "upstream_bad_stream"


def test_json_paths_of_the_simple_kind_are_read_step_by_step():
    assert json_path("$.a.b[0]['c d'][\"e\"]") == ["a", "b", 0, "c d", "e"]
    assert json_path("a.b") is None
    assert json_path("$..a") is None


_KEYS = st.text(alphabet=st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(values=st.dictionaries(_KEYS, st.text(max_size=30), min_size=1, max_size=5), data=st.data())
def test_string_arguments_cut_anywhere_assemble_to_the_whole(values, data):
    """However Vertex cuts each string value into `willContinue` pieces, the call gets the whole value."""
    pending = PendingCall("f", None)
    for key, text in values.items():
        cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=4)))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        for n, piece in enumerate(pieces):
            add_partial_arg(pending, {"jsonPath": f"$['{key}']", "stringValue": piece,
                                      "willContinue": n < len(pieces) - 1}, "gem")
    assert pending.args == values


def test_partial_args_that_disagree_on_their_shape_fail():
    pending = PendingCall("f", None)
    add_partial_arg(pending, {"jsonPath": "$.a", "numberValue": 1}, "gem")
    with pytest.raises(GatewayError) as info:
        add_partial_arg(pending, {"jsonPath": "$.a[0]", "stringValue": "x"}, "gem")
    assert info.value.code == "upstream_bad_stream"
    assert orjson.dumps(pending.args) == b'{"a":1}'
