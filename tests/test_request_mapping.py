"""The request each provider receives, pinned field by field: an OpenAI request in, the exact upstream body
out (one case per mapped field), and a 400 naming the field for each request a provider cannot honour.
The README's provider mapping table is this file in prose."""

from __future__ import annotations

import pytest

from tests.anthropic_wire import message, text_block
from tests.helpers import GEMINI_OK_STREAM as OK_STREAM

HI = [{"role": "user", "content": "hi"}]
ANTHROPIC_HI = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
GEMINI_HI = [{"role": "user", "parts": [{"text": "hi"}]}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "Weather", "schema": SCHEMA, "strict": True}}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}


async def upstream_body(upstream, gateway, model: str, request: dict, answer: bytes) -> dict:
    upstream.stream(answer)
    response = await gateway.post("/v1/chat/completions", json={"model": model, "messages": HI, **request})
    assert response.status == 200, await response.text()
    return upstream.received[-1].body


ANTHROPIC_CASES = {
    "json_schema_is_native_output_config_on_claude_4_5": (
        "claude-sonnet-4-5", {"response_format": JSON_SCHEMA},
        {"max_tokens": 4096, "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}),
    "json_schema_is_a_forced_answer_tool_on_older_models": (
        "claude-3-5-haiku-latest", {"response_format": JSON_SCHEMA},
        {"max_tokens": 4096, "tools": [{"name": "Weather", "description": "Give the answer: its input is the whole "
                                        "response, as a JSON object.", "input_schema": SCHEMA}],
         "tool_choice": {"type": "tool", "name": "Weather"}}),
    "json_object_is_a_forced_answer_tool_taking_any_object": (
        "claude-sonnet-4-5", {"response_format": {"type": "json_object"}},
        {"max_tokens": 4096, "tools": [{"name": "json_response", "description": "Give the answer: its input is the "
                                        "whole response, as a JSON object.", "input_schema": {"type": "object"}}],
         "tool_choice": {"type": "tool", "name": "json_response"}}),
    "json_schema_without_its_optional_schema_is_an_answer_tool_taking_any_object": (
        "claude-sonnet-4-5", {"response_format": {"type": "json_schema", "json_schema": {"name": "Note"}}},
        {"max_tokens": 4096, "tools": [{"name": "Note", "description": "Give the answer: its input is the whole "
                                        "response, as a JSON object.", "input_schema": {"type": "object"}}],
         "tool_choice": {"type": "tool", "name": "Note"}}),
    "response_format_text_sends_nothing": ("claude-sonnet-4-5", {"response_format": {"type": "text"}},
                                           {"max_tokens": 4096}),
    "reasoning_effort_budget_fits_a_small_max_tokens": (
        "claude-sonnet-4-5", {"reasoning_effort": "high", "max_tokens": 3000},
        {"max_tokens": 3000 + 24576, "thinking": {"type": "enabled", "budget_tokens": 24576}}),
    "reasoning_effort_keeps_a_max_tokens_larger_than_the_budget": (
        "claude-sonnet-4-5", {"reasoning_effort": "minimal", "max_completion_tokens": 5000},
        {"max_tokens": 5000, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    "reasoning_effort_without_max_tokens_adds_the_budget_to_the_default": (
        "claude-sonnet-4-5", {"reasoning_effort": "low"},
        {"max_tokens": 4096 + 2048, "thinking": {"type": "enabled", "budget_tokens": 2048}}),
    "reasoning_effort_none_sends_no_thinking": ("claude-sonnet-4-5", {"reasoning_effort": "none"},
                                                {"max_tokens": 4096}),
    "thinking_drops_temperature_and_top_p": (
        "claude-sonnet-4-5", {"reasoning_effort": "medium", "temperature": 0.2, "top_p": 0.9},
        {"max_tokens": 4096 + 8192, "thinking": {"type": "enabled", "budget_tokens": 8192}}),
    "explicit_thinking_wins_over_reasoning_effort": (
        "claude-sonnet-4-5", {"reasoning_effort": "high", "thinking": {"type": "enabled", "budget_tokens": 1500},
                              "max_tokens": 1000},
        {"max_tokens": 2500, "thinking": {"type": "enabled", "budget_tokens": 1500}}),
    "temperature_and_top_p_without_thinking": (
        "claude-sonnet-4-5", {"temperature": 1.5, "top_p": 0.9},
        {"max_tokens": 4096, "temperature": 1.0, "top_p": 0.9}),
    "stop_is_stop_sequences": ("claude-sonnet-4-5", {"stop": "END"}, {"max_tokens": 4096, "stop_sequences": ["END"]}),
    "user_is_metadata_user_id": ("claude-sonnet-4-5", {"user": "u-1"},
                                 {"max_tokens": 4096, "metadata": {"user_id": "u-1"}}),
    "max_completion_tokens_is_max_tokens": ("claude-sonnet-4-5", {"max_completion_tokens": 77}, {"max_tokens": 77}),
    "tools_tool_choice_and_parallel_tool_calls": (
        "claude-sonnet-4-5", {"tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
        {"max_tokens": 4096, "tools": [{"name": "get_weather", "description": "", "input_schema": SCHEMA}],
         "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}),
    "seed_penalties_and_logit_bias_are_dropped_anthropic_has_none": (
        "claude-sonnet-4-5", {"seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {"1": 2}},
        {"max_tokens": 4096}),
    "native_structured_output_with_thinking": (
        "claude-opus-4-6", {"response_format": JSON_SCHEMA, "reasoning_effort": "minimal"},
        {"max_tokens": 4096 + 1024, "thinking": {"type": "enabled", "budget_tokens": 1024},
         "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}),
}


@pytest.mark.parametrize("case", ANTHROPIC_CASES)
async def test_anthropic_receives(case, upstream, gateway):
    model, request, expected = ANTHROPIC_CASES[case]
    body = await upstream_body(upstream, gateway, f"ant/{model}", request, message(text_block(0, "{}")))
    assert body == {"model": model, "messages": ANTHROPIC_HI, "stream": True, **expected}


GEMINI_CASES = {
    "json_schema_is_response_schema": (
        {"response_format": JSON_SCHEMA},
        {"responseMimeType": "application/json", "responseSchema": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}),
    "json_object_is_the_json_mime_type": ({"response_format": {"type": "json_object"}},
                                          {"responseMimeType": "application/json"}),
    "reasoning_effort_is_the_shared_budget": (
        {"reasoning_effort": "medium"}, {"thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": True}}),
    "reasoning_effort_budget_fits_a_small_max_tokens": (
        {"reasoning_effort": "high", "max_tokens": 3000},
        {"maxOutputTokens": 3000 + 24576, "thinkingConfig": {"thinkingBudget": 24576, "includeThoughts": True}}),
    "reasoning_effort_none_turns_thinking_off": ({"reasoning_effort": "none", "max_tokens": 10},
                                                 {"maxOutputTokens": 10, "thinkingConfig": {"thinkingBudget": 0}}),
    "explicit_google_thinking_config_wins_over_reasoning_effort": (
        {"reasoning_effort": "high", "max_tokens": 100,
         "extra_body": {"google": {"thinking_config": {"thinking_budget": 800, "include_thoughts": False}}}},
        {"maxOutputTokens": 900, "thinkingConfig": {"thinkingBudget": 800, "includeThoughts": False}}),
    "google_thinking_level_passes_as_thinking_level": (
        {"extra_body": {"google": {"thinking_config": {"thinking_level": "low"}}}},
        {"thinkingConfig": {"thinkingLevel": "low"}}),
    "seed_penalties_n_and_stop_map": (
        {"seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25, "stop": ["END"]},
        {"presencePenalty": 0.5, "frequencyPenalty": 0.25, "stopSequences": ["END"], "seed": 7}),
    "thinking_keeps_temperature_and_top_p": (
        {"reasoning_effort": "minimal", "temperature": 0.2, "top_p": 0.9},
        {"temperature": 0.2, "topP": 0.9, "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}),
}


@pytest.mark.parametrize("case", GEMINI_CASES)
async def test_gemini_receives(case, upstream, gateway):
    request, expected = GEMINI_CASES[case]
    body = await upstream_body(upstream, gateway, "gem/gemini-2.5-flash", request, OK_STREAM)
    assert body == {"contents": GEMINI_HI, "generationConfig": expected}


REFUSED = {
    "anthropic_answer_tool_beside_client_tools": (
        "ant/claude-3-5-haiku-latest", {"response_format": JSON_SCHEMA, "tools": [WEATHER_TOOL]}, "response_format"),
    "anthropic_answer_tool_with_thinking": (
        "ant/claude-3-7-sonnet-latest", {"response_format": {"type": "json_object"}, "reasoning_effort": "low"},
        "response_format"),
    "anthropic_unknown_reasoning_effort": ("ant/claude-sonnet-4-5", {"reasoning_effort": "extreme"},
                                           "reasoning_effort"),
    "json_schema_name_unfit_for_a_tool_name": (
        "ant/claude-3-5-haiku-latest", {"response_format": {"type": "json_schema", "json_schema": {
            "name": "my schema!", "schema": SCHEMA}}}, "response_format.json_schema.name"),
    "gemini_thinking_budget_not_an_integer": (
        "gem/gemini-2.5-flash", {"extra_body": {"google": {"thinking_config": {"thinking_budget": "lots"}}}},
        "extra_body.google.thinking_config.thinking_budget"),
    "anthropic_forced_tool_choice_with_thinking": (
        "ant/claude-sonnet-4-5", {"tools": [WEATHER_TOOL], "tool_choice": "required", "reasoning_effort": "low"},
        "tool_choice"),
    "anthropic_more_than_one_answer": ("ant/claude-sonnet-4-5", {"n": 2}, "n"),
    "gemini_unknown_reasoning_effort": ("gem/gemini-2.5-flash", {"reasoning_effort": "extreme"}, "reasoning_effort"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_refused_with_400_naming_the_field(case, upstream, gateway):
    model, request, param = REFUSED[case]
    response = await gateway.post("/v1/chat/completions", json={"model": model, "messages": HI, **request})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert upstream.received == []


async def test_openai_receives_response_format_and_reasoning_effort_as_sent(upstream, gateway):
    from tests.fakes.upstream import chat_chunk, sse

    request = {"response_format": JSON_SCHEMA, "reasoning_effort": "high", "max_completion_tokens": 3000}
    body = await upstream_body(upstream, gateway, "up/gpt-4o-mini", request, sse(chat_chunk({"content": "{}"}, "stop")))
    assert body == {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": {"include_usage": True},
                    **request}


@pytest.mark.parametrize(("model", "native"), [
    ("claude-3-5-haiku-latest", False), ("claude-3-7-sonnet-20250219", False), ("claude-sonnet-4-20250514", False),
    ("claude-opus-4-1", False), ("claude-sonnet-4@20250514", False), ("anthropic.claude-3-5-sonnet-20240620-v1:0", False),
    ("claude-sonnet-4-5-20250929", True), ("claude-opus-4-6", True), ("claude-haiku-4-5@20251001", True),
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", True), ("my-claude-alias", True),
])
async def test_anthropic_native_structured_output_unless_the_model_predates_it(model, native, upstream, gateway):
    body = await upstream_body(upstream, gateway, f"ant/{model}", {"response_format": JSON_SCHEMA},
                               message(text_block(0, "{}")))
    assert ("output_config" in body) is native and ("tool_choice" in body) is not native
