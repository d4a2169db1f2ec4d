"""The `moderate` middleware over real HTTP: the gateway in front of a fake upstream (and a fake
moderation service), both real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import copy
import logging

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli import main as gateway_main
from gateway.config import parse_config
from gateway.context import RequestContext
from gateway.pipeline.moderate import _Output
from tests.conftest import gateway_yaml
from tests.fakes.moderation import FakeModeration
from tests.fakes.upstream import Reply, Wait, chat_chunk, sse

BOUND = 10  # seconds: a bound on waits, so that a broken gateway fails the test instead of hanging it
CHAT = {"model": "up/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
ROLE = chat_chunk({"role": "assistant", "content": ""})
RULES = r"""
moderation:
  rules:
    - {term: "forbidden phrase", action: block}
    - {regex: "\\b\\d{3}-\\d{2}-\\d{4}\\b", action: redact, mask: "[redacted]"}
    - {term: "darn", action: redact}
"""


def content(text: str, index: int = 0) -> dict:
    return chat_chunk({"content": text}, index=index)


def parse(raw: bytes) -> list:
    """The data events of an SSE body: parsed JSON, or the string "[DONE]"."""
    out = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[len(b"data: "):]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def joined(events: list, field: str = "content", index: int = 0) -> str:
    return "".join(c["delta"].get(field) or "" for e in events if isinstance(e, dict)
                   for c in e.get("choices") or () if c["index"] == index)


def arguments(events: list, index: int = 0) -> str:
    return "".join(call["function"].get("arguments") or "" for e in events if isinstance(e, dict)
                   for c in e.get("choices") or () if c["index"] == index
                   for call in c["delta"].get("tool_calls") or ())


def finishes(events: list) -> list[tuple[int, str]]:
    return [(c["index"], c["finish_reason"]) for e in events if isinstance(e, dict)
            for c in e.get("choices") or () if c.get("finish_reason")]


async def stream(gateway, body: dict = CHAT, path: str = "/v1/chat/completions") -> list:
    response = await gateway.post(path, json=body)
    assert response.status == 200, await response.text()
    events = parse(await asyncio.wait_for(response.read(), BOUND))
    assert not [e for e in events if isinstance(e, dict) and "error" in e]  # e.g. an upstream idle timeout
    return events


@pytest.fixture
async def moderation_service(aiohttp_server):
    fake = FakeModeration("flagme")
    server = await aiohttp_server(fake.app)
    fake.url = str(server.make_url("/v1/moderations"))
    return fake


async def test_a_term_split_across_chunks_is_redacted(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(ROLE, content("Oh d"), content("ar"), content("N, my SSN is 123-4"), content("5-67"),
                        content("89."), chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert joined(events) == "Oh ***, my SSN is [redacted]."
    assert finishes(events) == [(0, "stop")]
    assert events[-1] == "[DONE]"


async def test_text_that_cannot_start_a_match_flows_at_once(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    go_on = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, content("Hello, forb"), done=False), Wait(go_on),
                                sse(content("ade it"), chat_chunk({}, "stop"))]))
    response = await gateway.post("/v1/chat/completions", json=CHAT)
    seen = b""
    while b"Hello, " not in seen:  # sent while the upstream still waits: only "forb" is held
        seen += await asyncio.wait_for(response.content.readany(), BOUND)
    assert b"forb" not in seen
    go_on.set()
    events = parse(seen + await asyncio.wait_for(response.read(), BOUND))
    assert joined(events) == "Hello, forbade it"
    assert finishes(events) == [(0, "stop")]


async def test_block_mid_stream_ends_with_content_filter_and_closes_the_upstream(upstream, make_gateway, caplog):
    gateway = await make_gateway(extra=RULES)
    never = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, content("Say the Forbidden"), content(" PHRASE and more"), done=False),
                                Wait(never), sse(chat_chunk({}, "stop"))]))
    body = {**CHAT, "stream_options": {"include_usage": True}}
    with caplog.at_level(logging.INFO, logger="gateway"):
        events = await stream(gateway, body)
    assert joined(events) == "Say the "
    assert finishes(events) == [(0, "content_filter")]
    assert events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)  # the upstream was cut: no counts
    await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)
    assert upstream.cut_off == 1
    blocked = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    assert len(blocked) == 1 and "rule 0" in blocked[0]
    assert "forbidden" not in caplog.text.lower()


async def test_a_non_stream_answer_is_cut_the_same_way(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(ROLE, content("A darn fine "), content("forbidden phrase!"), content(" more"),
                        chat_chunk({}, "stop")))
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "stream": False})
    assert response.status == 200
    answer = await response.json()
    assert answer["choices"][0]["message"]["content"] == "A *** fine "
    assert answer["choices"][0]["finish_reason"] == "content_filter"


async def test_held_text_is_released_before_the_finish(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(ROLE, content("it ends in forbidden phr"), chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert joined(events) == "it ends in forbidden phr"
    finish_at = next(i for i, e in enumerate(events) if isinstance(e, dict) and finishes([e]))
    assert joined(events[:finish_at]) == "it ends in forbidden phr"  # all of it came before the finish chunk


async def test_reasoning_is_checked_and_released_before_the_content(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(ROLE, chat_chunk({"reasoning_content": "user said 123-45-67"}),
                        chat_chunk({"reasoning_content": "89, so da"}), content("Answer: da"), content("rn."),
                        chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert joined(events, "reasoning_content") == "user said [redacted], so da"
    assert joined(events) == "Answer: ***."
    first_content = next(i for i, e in enumerate(events) if isinstance(e, dict) and joined([e]))
    assert joined(events[:first_content + 1], "reasoning_content") == "user said [redacted], so da"


async def test_tool_call_arguments_are_checked(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "fo'}}
    upstream.stream(sse(
        chat_chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'rbidden phrase"}'}}]}),
        chat_chunk({}, "tool_calls")))
    events = await stream(gateway)
    assert arguments(events) == '{"q": "'
    assert finishes(events) == [(0, "content_filter")]


async def test_switches_turn_fields_off(upstream, make_gateway):
    extra = RULES + "  reasoning: false\n  tool_arguments: false\n"
    gateway = await make_gateway(extra=extra)
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '"darn"'}}
    upstream.stream(sse(chat_chunk({"role": "assistant", "reasoning_content": "darn it"}),
                        chat_chunk({"content": "darn", "tool_calls": [call]}), chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert joined(events, "reasoning_content") == "darn it"
    assert joined(events) == "***"
    assert arguments(events) == '"darn"'


async def test_with_two_choices_a_block_ends_only_its_own(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(
        chat_chunk({"role": "assistant", "content": ""}, index=0), chat_chunk({"role": "assistant", "content": ""},
                                                                              index=1),
        content("one forbidden phrase", 0), content("two is fine", 1), content(" trailing", 0),
        content(" and done", 1), chat_chunk({}, "stop", index=1), chat_chunk({}, "stop", index=0)))
    events = await stream(gateway, {**CHAT, "n": 2})
    assert joined(events, index=0) == "one "
    assert joined(events, index=1) == "two is fine and done"
    assert finishes(events) == [(0, "content_filter"), (1, "stop")]


async def test_the_request_is_refused_before_the_upstream_is_called(upstream, make_gateway, caplog):
    gateway = await make_gateway(extra=RULES)
    body = {**CHAT, "messages": [{"role": "system", "content": "be nice"},
                                 {"role": "user", "content": [{"type": "text", "text": "Say the FORBIDDEN phrase"}]}]}
    with caplog.at_level(logging.INFO, logger="gateway"):
        response = await gateway.post("/v1/chat/completions", json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["code"] == "content_filter" and error["type"] == "invalid_request_error"
    assert "forbidden" not in error["message"].lower()
    assert upstream.received == []
    assert "forbidden" not in caplog.text.lower()
    response = await gateway.post("/v1/completions", json={"model": "up/gpt-4o-mini", "prompt": "my 123-45-6789"})
    assert response.status == 400 and (await response.json())["error"]["code"] == "content_filter"
    assert upstream.received == []


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
# Every place of a chat request a provider reads text from, each carrying a blocked phrase.
HIDDEN_INPUT = {
    "assistant tool-call arguments": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {**CALL, "function": {"name": "lookup", "arguments": '{"q": "the forbidden phrase"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
    "tool result string": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "result: forbidden phrase"}],
    "tool result parts": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "forbidden phrase"}]}],
    "assistant refusal part": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "no, forbidden phrase"}]},
        {"role": "user", "content": "again"}],
    "assistant refusal field": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "fine", "refusal": "the forbidden phrase"},
        {"role": "user", "content": "again"}],
    "legacy function_call": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None,
         "function_call": {"name": "lookup", "arguments": '{"q": "forbidden phrase"}'}},
        {"role": "function", "name": "lookup", "content": "ok"}],
}


@pytest.mark.parametrize("model", ["up/gpt-4o-mini", "ant/claude-sonnet-4", "gem/gemini-2.5-flash"])
@pytest.mark.parametrize("where", HIDDEN_INPUT)
async def test_input_moderation_looks_inside_tool_calls_tool_results_and_refusals(upstream, make_gateway, where,
                                                                                   model):
    gateway = await make_gateway(extra=RULES)
    response = await gateway.post("/v1/chat/completions", json={**CHAT, "model": model,
                                                                "messages": HIDDEN_INPUT[where]})
    assert response.status == 400, await response.text()
    assert (await response.json())["error"]["code"] == "content_filter"
    assert upstream.received == []


async def test_input_moderation_checks_the_tool_definitions(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    tool = {"type": "function", "function": {"name": "lookup", "description": "say the forbidden phrase",
                                             "parameters": {"type": "object", "properties": {}}}}
    schema_tool = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string", "description": "a forbidden phrase"}}}}}
    for tools in ([tool], [schema_tool]):
        response = await gateway.post("/v1/chat/completions", json={**CHAT, "tools": tools})
        assert response.status == 400
    assert upstream.received == []


async def test_a_refusal_in_the_answer_goes_through_the_rules(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(ROLE, chat_chunk({"refusal": "I won't say the forb"}), chat_chunk({"refusal": "idden phrase"}),
                        chat_chunk({"refusal": ", darn."}), chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert joined(events, "refusal") == "I won't say the "
    assert finishes(events) == [(0, "content_filter")]
    upstream.stream(sse(ROLE, chat_chunk({"refusal": "No, d"}), chat_chunk({"refusal": "arn."}),
                        chat_chunk({}, "stop")))
    answer = await (await gateway.post("/v1/chat/completions", json={**CHAT, "stream": False})).json()
    assert answer["choices"][0]["message"]["refusal"] == "No, ***."


async def test_input_false_lets_the_request_through(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES + "  input: false\n")
    upstream.stream(sse(ROLE, content("ok"), chat_chunk({}, "stop")))
    events = await stream(gateway, {**CHAT, "messages": [{"role": "user", "content": "darn"}]})
    assert joined(events) == "ok"


async def test_the_completions_endpoint_is_moderated(upstream, make_gateway):
    gateway = await make_gateway(extra=RULES)
    upstream.stream(sse(ROLE, content("well d"), content("arn it"), chat_chunk({}, "stop")))
    events = await stream(gateway, {"model": "up/gpt-4o-mini", "prompt": "hi", "stream": True}, "/v1/completions")
    assert "".join(c["text"] for e in events if isinstance(e, dict) for c in e["choices"]) == "well *** it"


def test_gateway_check_refuses_an_unbounded_regex_without_max_chars(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(gateway_yaml("http://127.0.0.1:1", extra="""
moderation:
  rules:
    - {term: fine, action: block}
    - {regex: "<.*>", action: redact}
"""))
    assert gateway_main(["check", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if "<.*>" in text)
    assert f"line {line}: moderation.rules[1].regex: " in err and "max_chars" in err
    good = tmp_path / "good.yaml"
    good.write_text(bad.read_text().replace('action: redact}', 'action: redact, max_chars: 200}'))
    assert gateway_main(["check", "--config", str(good)]) == 0
    assert "note: moderation is configured" not in capsys.readouterr().out
    good.write_text(good.read_text().replace("middlewares: [normalize, ratelimit, moderate]", "middlewares: [normalize]"))
    assert gateway_main(["check", "--config", str(good)]) == 0
    assert "note: moderation is configured but 'moderate' is not in middlewares" in capsys.readouterr().out


async def test_service_flagged_input_is_refused(upstream, make_gateway, moderation_service):
    gateway = await make_gateway(extra=f"moderation:\n  service: {{url: {moderation_service.url}}}\n")
    response = await gateway.post("/v1/chat/completions",
                                  json={**CHAT, "messages": [{"role": "user", "content": "please flagme"}]})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "content_filter"
    assert moderation_service.inputs == ["please flagme"]
    assert upstream.received == []


async def test_service_flagged_output_window_blocks(upstream, make_gateway, moderation_service):
    gateway = await make_gateway(
        extra=f"moderation:\n  service: {{url: {moderation_service.url}, window_chars: 10}}\n")
    never = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, content("first safe "), content("then flag"), content("me now"),
                                    done=False), Wait(never)]))
    events = await stream(gateway)
    assert joined(events) == "first safe "  # the window that was checked and clean
    assert finishes(events) == [(0, "content_filter")]
    assert events[-1] == "[DONE]"
    assert moderation_service.inputs == ["hi", "first safe ", "then flagme now"]
    await asyncio.wait_for(upstream.cut_off_event.wait(), BOUND)


@pytest.mark.parametrize("on_error, expected_finish", [("allow", "stop"), ("block", "content_filter")])
async def test_a_slow_service_is_handled_as_on_error_says(upstream, make_gateway, moderation_service, on_error,
                                                          expected_finish):
    moderation_service.delay = 5
    gateway = await make_gateway(extra=f"moderation:\n  input: false\n  service: {{url: {moderation_service.url}, "
                                       f"timeout: 0.05, window_chars: 5, on_error: {on_error}}}\n")
    upstream.stream(sse(ROLE, content("hello world"), chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert finishes(events) == [(0, expected_finish)]
    assert joined(events) == ("hello world" if on_error == "allow" else "")


async def test_a_failing_service_on_input_with_on_error_block_refuses(upstream, make_gateway, moderation_service):
    moderation_service.status = 503
    gateway = await make_gateway(
        extra=f"moderation:\n  service: {{url: {moderation_service.url}, on_error: block}}\n")
    response = await gateway.post("/v1/chat/completions", json=CHAT)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "content_filter"
    assert upstream.received == []


async def test_without_moderation_config_the_middleware_passes_chunks_on(upstream, gateway):
    upstream.stream(sse(ROLE, content("forbidden phrase"), chat_chunk({}, "stop")))
    events = await stream(gateway)
    assert joined(events) == "forbidden phrase"


@settings(max_examples=200, deadline=None)
@given(st.text("forbidden phrase darn123-45-6789", max_size=80), st.data())
def test_the_middleware_output_does_not_depend_on_the_chunking(text, data):
    """The answer's content, however the upstream split it, comes out as the whole text moderated at once."""
    config = parse_config(gateway_yaml("http://127.0.0.1:1", extra=RULES))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]

    def run(parts: list[str]) -> tuple[str, list]:
        ctx = RequestContext("chat", {}, config.providers["up"], "m", "m", True, False,
                             settings=dict(config.settings))
        output = _Output(ctx, config.moderation)
        events = []
        for chunk in [ROLE, *(content(p) for p in parts), chat_chunk({}, "stop")]:
            if not output.done:
                events.extend(output.apply(copy.deepcopy(chunk)))
        events.extend(output.end())
        return joined(events), finishes(events)

    assert run(pieces) == run([text])
