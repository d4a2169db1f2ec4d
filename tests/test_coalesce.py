"""Delta batching (stream_options.coalesce_ms, a key's coalesce_ms): through a gateway over sockets against a
paced fake upstream, and a hypothesis property over the middleware itself on a loop with a virtual clock
(any stream, any arrival timing, any client pace)."""

from __future__ import annotations

import asyncio
import selectors
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, parse_config
from gateway.errors import upstream_truncated
from gateway.pipeline import Chain
from gateway.pipeline.coalesce import coalesce, is_active
from tests.fakes.upstream import RESET, Reply, Wait, chat_chunk, sse
from tests.helpers import BOUND, CHAT, ROLE, assert_openai_error, bearer, decode, digest, reassemble

WINDOW = 400  # ms: far longer than the fake's writes take to reach the gateway, so a batch's writes land in it
KEY = "gwk-coalesce-0123456789abcdefSECRET"
USAGE = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}


def keyed(coalesce_ms: int) -> str:
    return f"keys:\n  - {{id: ui, sha256: {digest(KEY)}, coalesce_ms: {coalesce_ms}}}\n"


def paced(*groups: list[dict], held: list[asyncio.Event], done: bool = True) -> Reply:
    """One SSE reply: each group's chunks written one by one, the stream held after each group but the
    last until the test sets that group's event."""
    steps: list = []
    for n, group in enumerate(groups):
        steps += [sse(chunk, done=False) for chunk in group]
        if n < len(held):
            steps.append(Wait(held[n]))
    if done:
        steps.append(b"data: [DONE]\n\n")
    return Reply(steps=steps)


class EventReader:
    """The chunks of a streamed response, read as they come: `until(predicate)` reads until it holds."""

    def __init__(self, response) -> None:
        self.response = response
        self.buffer = b""
        self.events: list[bytes] = []

    async def until(self, predicate) -> list[dict]:
        async with asyncio.timeout(BOUND):
            while not predicate(self.chunks()):
                data = await self.response.content.readany()
                assert data, f"the stream ended early: {self.events}"
                self.buffer += data
                *complete, self.buffer = self.buffer.split(b"\n\n")
                self.events += complete
        return self.chunks()

    async def rest(self) -> list[dict]:
        self.buffer += await self.response.content.read()
        *complete, self.buffer = self.buffer.split(b"\n\n")
        self.events += complete
        return self.chunks()

    def chunks(self) -> list[dict]:
        return [orjson.loads(e[6:]) for e in self.events if e.startswith(b"data: {")]

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == b"data: [DONE]"


def content(chunks: list[dict], index: int = 0) -> str:
    return "".join(c["delta"].get("content") or "" for chunk in chunks for c in chunk.get("choices") or ()
                   if c["index"] == index)


def finished(chunks: list[dict]) -> bool:
    return any(c.get("finish_reason") for chunk in chunks for c in chunk.get("choices") or ())


async def post(client, body: dict, key: str | None = None):
    return await client.post("/v1/chat/completions", json=body, headers=bearer(key) if key else {})


# ------------------------------------------------------------------------------------- over sockets

async def test_deltas_within_the_window_go_out_as_one_chunk_while_the_upstream_is_silent(make_gateway, upstream):
    gateway = await make_gateway()
    hold = asyncio.Event()
    words = ["The", " gateway", " merges", " these", " six", " tokens"]
    upstream.queue(paced([ROLE, *(chat_chunk({"content": w}) for w in words)],
                         [chat_chunk({"content": "."}), chat_chunk({}, "stop")], held=[hold]))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": WINDOW}})
    assert response.status == 200
    reader = EventReader(response)
    # The upstream is held after the six tokens: only the window's timer can send them.
    chunks = await reader.until(lambda chunks: content(chunks) == "".join(words))
    assert len(chunks) == 1, "the role and the six tokens are one chunk"
    (choice,) = chunks[0]["choices"]
    assert choice["delta"] == {"role": "assistant", "content": "".join(words)}
    assert choice["finish_reason"] is None and chunks[0]["id"] == "chatcmpl-fake1"
    hold.set()
    chunks = await reader.rest()
    assert reader.done
    # The last token and the finish chunk arrive together: the token goes into the finish chunk.
    assert [c["choices"][0] for c in chunks[1:]] == [
        {"index": 0, "delta": {"content": "."}, "logprobs": None, "finish_reason": "stop"}]


async def test_without_coalesce_ms_every_delta_is_its_own_chunk(gateway, upstream):
    upstream.stream(sse(ROLE, *(chat_chunk({"content": w}) for w in "abcdef"), chat_chunk({}, "stop")))
    response = await post(gateway, CHAT)
    chunks = EventReader(response)
    await chunks.rest()
    assert len(chunks.chunks()) == 8


async def test_tool_call_fragments_are_merged_per_tool_index(make_gateway, upstream):
    gateway = await make_gateway()
    hold = asyncio.Event()

    def call(index: int, arguments: str, head: tuple[str, str] | None = None) -> dict:
        fragment = {"index": index, "function": {"arguments": arguments}}
        if head:
            fragment = {"index": index, "id": head[0], "type": "function",
                        "function": {"name": head[1], "arguments": arguments}}
        return chat_chunk({"tool_calls": [fragment]})

    tools = [chat_chunk({"role": "assistant", "content": None, "tool_calls": [
                 {"index": 0, "id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
             call(0, '{"ci'), call(0, 'ty": "Pa'), call(0, 'ris"}'),
             call(1, "", ("call_t", "get_time")), call(1, '{"tz": '), call(1, '"CET"}')]
    upstream.queue(paced(tools, [chat_chunk({}, "tool_calls")], held=[hold]))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": WINDOW}})
    reader = EventReader(response)
    (chunk,) = await reader.until(lambda chunks: chunks)
    (choice,) = chunk["choices"]
    assert choice["delta"] == {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"index": 1, "id": "call_t", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
    ]}
    hold.set()
    chunks = await reader.rest()
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "tool_calls"]


async def test_finish_and_usage_go_out_at_once_with_the_batch_ahead_of_them(make_gateway, upstream):
    gateway = await make_gateway()
    hold = asyncio.Event()
    # The stream stays open after the finish chunk: nothing but the finish itself can send the batch.
    upstream.queue(paced([ROLE, chat_chunk({"content": "a"}), chat_chunk({"content": "b"}), chat_chunk({}, "stop"),
                          chat_chunk(choices=[], usage=USAGE)], [], held=[hold]))
    body = {**CHAT, "stream_options": {"coalesce_ms": 1000, "include_usage": True}}
    response = await post(gateway, body)
    reader = EventReader(response)
    chunks = await reader.until(finished)
    assert [c["choices"] for c in chunks] == [
        [{"index": 0, "delta": {"role": "assistant", "content": "ab"}, "logprobs": None, "finish_reason": "stop"}]]
    hold.set()
    chunks = await reader.rest()
    assert reader.done and chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    assert len(chunks) == 2


async def test_an_upstream_error_follows_the_batch_it_cut(make_gateway, upstream):
    gateway = await make_gateway()
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "par"}), chat_chunk({"content": "tial"}), done=False),
                                RESET]))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": 1000}})
    reader = EventReader(response)
    await reader.rest()
    assert reader.done
    *chunks, error = [orjson.loads(e[6:]) for e in reader.events if e.startswith(b"data: {")]
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": "partial"}]
    assert assert_openai_error(error)["code"] == "upstream_reset"


async def test_an_error_chunk_from_the_provider_reaches_the_client_after_the_batch(make_gateway, upstream):
    gateway = await make_gateway()
    error = {"error": {"message": "overloaded", "type": "server_error", "code": 503}}
    upstream.stream(sse(ROLE, chat_chunk({"content": "so far"}), error, done=False))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": 1000}})
    events = decode(await response.read())
    assert [e[1]["choices"][0]["delta"] for e in events[:-1]] == [{"role": "assistant", "content": "so far"}]
    assert "overloaded" in assert_openai_error(events[-1][1])["message"]


async def test_choices_are_merged_apart_in_the_order_they_came(make_gateway, upstream):
    gateway = await make_gateway()
    hold = asyncio.Event()
    first = [chat_chunk({"role": "assistant", "content": ""}, index=1), chat_chunk({"content": "x"}, index=1),
             chat_chunk({"role": "assistant", "content": ""}, index=0), chat_chunk({"content": "a"}, index=0),
             chat_chunk({"content": "y"}, index=1), chat_chunk({"content": "b"}, index=0)]
    upstream.queue(paced(first, [chat_chunk({}, "stop", index=1), chat_chunk({"content": "c"}, index=0),
                                 chat_chunk({}, "stop", index=0)], held=[hold]))
    response = await post(gateway, {**CHAT, "n": 2, "stream_options": {"coalesce_ms": WINDOW}})
    reader = EventReader(response)
    (chunk,) = await reader.until(lambda chunks: chunks)
    assert [(c["index"], c["delta"]) for c in chunk["choices"]] == [
        (1, {"role": "assistant", "content": "xy"}), (0, {"role": "assistant", "content": "ab"})]
    hold.set()
    answer = reassemble([(None, c) for c in await reader.rest()])
    assert {i: (c["content"], c["finish"]) for i, c in answer["choices"].items()} == {0: ("abc", "stop"), 1: ("xy", "stop")}


async def test_a_keys_default_applies_and_a_request_turns_it_off_with_zero(make_gateway, upstream):
    gateway = await make_gateway(extra=keyed(WINDOW))
    tokens = [ROLE, *(chat_chunk({"content": w}) for w in "abcde"), chat_chunk({}, "stop")]
    upstream.stream(sse(*tokens))
    response = await post(gateway, CHAT, KEY)
    reader = EventReader(response)
    await reader.rest()
    assert [c["choices"][0]["delta"] for c in reader.chunks()] == [{"role": "assistant", "content": "abcde"}]
    upstream.stream(sse(*tokens))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": 0}}, KEY)
    reader = EventReader(response)
    await reader.rest()
    assert len(reader.chunks()) == len(tokens)


async def test_the_combined_answer_is_unchanged_for_a_key_with_a_default(make_gateway, upstream):
    gateway = await make_gateway(extra=keyed(WINDOW))
    upstream.stream(sse(ROLE, chat_chunk({"content": "He"}), chat_chunk({"content": "llo"}), chat_chunk({}, "stop"),
                        chat_chunk(choices=[], usage=USAGE)))
    response = await post(gateway, {**CHAT, "stream": False}, KEY)
    assert response.status == 200
    answer = await response.json()
    assert answer["choices"][0]["message"]["content"] == "Hello" and answer["usage"]["total_tokens"] == 11


async def test_text_completions_are_merged_too(make_gateway, upstream):
    gateway = await make_gateway()
    upstream.stream(sse(ROLE, *(chat_chunk({"content": w}) for w in "abc"), chat_chunk({}, "stop")))
    response = await gateway.post("/v1/completions", json={"model": "up/gpt-4o-mini", "prompt": "hi", "stream": True,
                                                            "stream_options": {"coalesce_ms": WINDOW}})
    events = decode(await response.read())
    assert [(e[1]["object"], e[1]["choices"][0]["text"], e[1]["choices"][0]["finish_reason"]) for e in events] == [
        ("text_completion", "abc", "stop")]


async def test_moderation_still_redacts_a_term_split_over_merged_deltas(make_gateway, upstream):
    gateway = await make_gateway(extra='moderation:\n  rules:\n    - {term: "secret plan", action: redact, mask: "[x]"}\n')
    upstream.stream(sse(ROLE, chat_chunk({"content": "the secr"}), chat_chunk({"content": "et plan is"}),
                        chat_chunk({}, "stop")))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": WINDOW}})
    answer = reassemble(decode(await response.read()))
    assert answer["choices"][0]["content"] == "the [x] is"


# ------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("value", ["16", 16.5, -1, 1001, True, [16], {"ms": 16}])
async def test_a_bad_coalesce_ms_is_a_400_naming_it(gateway, upstream, value):
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": value}})
    assert response.status == 400
    error = assert_openai_error(await response.json())
    assert error["param"] == "stream_options.coalesce_ms"
    assert upstream.received == []


@pytest.mark.parametrize("value", [0, 1, 1000, None])
async def test_coalesce_ms_bounds_are_accepted(gateway, upstream, value):
    upstream.stream(sse(ROLE, chat_chunk({"content": "ok"}), chat_chunk({}, "stop")))
    response = await post(gateway, {**CHAT, "stream_options": {"coalesce_ms": value}})
    assert response.status == 200
    assert content([chunk for _, chunk in decode(await response.read())]) == "ok"


PROVIDERS = "providers:\n  - {name: demo, kind: demo, models: [echo]}\n"


@pytest.mark.parametrize("value", ["-1", "1001", "1.5", "'16'", "true", "[16]"])
def test_a_bad_key_default_is_a_config_problem(value):
    text = f"{PROVIDERS}keys:\n  - {{id: ui, sha256: {digest(KEY)}, coalesce_ms: {value}}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    assert [p.path for p in info.value.problems] == ["keys[0].coalesce_ms"]


@pytest.mark.parametrize("body, key, active", [
    ({"stream": True}, None, False),
    ({"stream": True, "stream_options": {"coalesce_ms": 16}}, None, True),
    ({"stream": True, "stream_options": {"coalesce_ms": 0}}, 50, False),
    ({"stream": True, "stream_options": {"include_usage": True}}, 50, True),
    ({"stream": True, "stream_options": {"coalesce_ms": None}}, 50, True),
    ({"stream": False}, 50, False),
])
def test_the_chain_leaves_the_stage_out_unless_the_request_or_key_asks(body, key, active):
    ctx = SimpleNamespace(stream=body["stream"], body=body, client=SimpleNamespace(coalesce_ms=key))

    async def source():
        yield ROLE

    chain = Chain(ctx, source(), ("normalize", "ratelimit", "moderate"))
    assert is_active(ctx) is active
    # Last, after moderate (which must see the original deltas), and not there at all when off.
    assert [stage.ag_code.co_name for stage in chain.stages[1:]] == (
        ["normalize", "ratelimit", "moderate"] + (["coalesce"] if active else []))


# ------------------------------------------------------------------- the property, on a virtual clock

class _VirtualClockSelector(selectors.DefaultSelector):
    """Never sleeps: a wait for the next timer moves the loop's clock to it instead."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        super().__init__()
        self.loop = loop

    def select(self, timeout=None):
        assert timeout is not None, "the loop would wait for I/O forever"
        self.loop.now += max(0.0, timeout)
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_VirtualClockSelector(self))

    def time(self) -> float:
        return self.now


FIELDS = ("content", "reasoning_content", "refusal")
ENVELOPE = {"id": "chatcmpl-prop", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def chunk_of(choices: list[dict], **extra) -> dict:
    return {**ENVELOPE, "choices": choices, **extra}


def choice_of(index: int, delta: dict, finish: str | None = None, logprobs=None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


@st.composite
def streams(draw):
    """Chunks as normalize makes them (role first per choice, tool heads then argument fragments, one
    finish per choice, usage last), with barriers (signatures, logprobs) and a possible error end."""
    n = draw(st.integers(1, 3))
    started, finished_, tools = set(), set(), {}
    chunks = []
    text = st.text(alphabet="ab é\n{}\"", min_size=0, max_size=3)
    for _ in range(draw(st.integers(0, 30))):
        index = draw(st.integers(0, n - 1))
        if index in finished_:
            continue
        kind = draw(st.sampled_from(["text", "text", "text", "tool", "finish", "signature", "logprobs"]))
        delta: dict = {}
        if index not in started:
            started.add(index)
            delta = {"role": "assistant", "content": ""}
        logprobs = None
        finish = None
        if kind == "text":
            delta[draw(st.sampled_from(FIELDS))] = draw(text)
        elif kind == "tool":
            tool = draw(st.integers(0, 2))
            known = tools.setdefault(index, set())
            if tool in known:
                delta["tool_calls"] = [{"index": tool, "function": {"arguments": draw(text)}}]
            else:
                known.add(tool)
                delta["tool_calls"] = [{"index": tool, "id": f"call_{index}_{tool}", "type": "function",
                                        "function": {"name": f"f{tool}", "arguments": draw(text)}}]
        elif kind == "finish":
            finish = draw(st.sampled_from(["stop", "length", "tool_calls"]))
            finished_.add(index)
        elif kind == "signature":
            delta["reasoning_signature"] = draw(text)
        else:
            delta["content"] = draw(text)
            logprobs = {"content": []}
        chunks.append(chunk_of([choice_of(index, delta, finish, logprobs)]))
    error = draw(st.booleans())
    if not error:
        for index in range(n):
            if index not in finished_:
                chunks.append(chunk_of([choice_of(index, {"role": "assistant", "content": ""} if index not in started
                                                  else {}, "stop")]))
        if draw(st.booleans()):
            chunks.append(chunk_of([], usage=dict(USAGE)))
    return chunks, error


def meaning(chunks: list[dict]) -> dict:
    """Per choice: each field's text, each tool index's head and arguments, the finish reason, and the
    order in which fields (and tool indexes) took turns; the usage."""
    out: dict = {"usage": [c["usage"] for c in chunks if c.get("usage")], "choices": {}}
    for chunk in chunks:
        for choice in chunk["choices"]:
            slot = out["choices"].setdefault(choice["index"], {"text": {}, "tools": {}, "turns": [], "finish": [],
                                                               "roles": 0})
            delta = choice["delta"]
            slot["roles"] += "role" in delta
            if choice["finish_reason"]:
                slot["finish"].append(choice["finish_reason"])
            for key, value in delta.items():
                if key == "role":
                    continue
                if key == "tool_calls":
                    for call in value:
                        tool = slot["tools"].setdefault(call["index"], {"head": None, "arguments": ""})
                        head = {k: call[k] for k in ("id", "type") if k in call}
                        if "name" in call["function"]:
                            head["name"] = call["function"]["name"]
                        if head:
                            assert tool["head"] in (None, head)
                            tool["head"] = head
                        tool["arguments"] += call["function"].get("arguments") or ""
                        turn = ("tool", call["index"])
                        if slot["turns"][-1:] != [turn]:
                            slot["turns"].append(turn)
                    continue
                slot["text"][key] = slot["text"].get(key, "") + value
                if slot["turns"][-1:] != [key]:
                    slot["turns"].append(key)
    return out


def _explain(out, chunks) -> str:
    got, want = meaning(out), meaning(chunks)
    return "\n".join(f"choice {i} {k}: got {got['choices'].get(i, {}).get(k)!r}, want {v!r}"
                     for i, slot in want["choices"].items() for k, v in slot.items()
                     if got["choices"].get(i, {}).get(k) != v) + f"\nout: {out!r}"


async def _play(chunks, error, window_ms, gaps, pauses, log):
    loop = asyncio.get_running_loop()
    failure = upstream_truncated("up")

    async def source():
        # The chunks that arrive together (no gap) come in one batch, as one upstream read holds them.
        batch = []
        for chunk, gap in zip(chunks, gaps):
            if gap and batch:
                yield batch
                batch = []
            await asyncio.sleep(gap / 1000)
            log["in"].append((loop.time(), chunk))
            batch.append(orjson.loads(orjson.dumps(chunk)))  # the stage may keep or change what it gets
        if batch:
            yield batch
        if error:
            await asyncio.sleep(gaps[-1] / 1000)
            raise failure

    ctx = SimpleNamespace(stream=True, body={"stream_options": {"coalesce_ms": window_ms}}, client=None)
    stage = coalesce(ctx, source())
    try:
        async for batch in stage:
            assert batch  # never an empty batch
            for chunk in batch:
                log["out"].append((loop.time(), chunk))
            if pauses:
                await asyncio.sleep(pauses[len(log["out"]) % len(pauses)] / 1000)
    except Exception as exc:
        log["error"] = exc
    finally:
        await stage.aclose()
    assert (log["error"] is failure) if error else log["error"] is None
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []  # the helper task ended


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), window_ms=st.integers(1, 60), data=st.data(),
       pauses=st.one_of(st.just([]), st.lists(st.sampled_from([0, 1, 5, 30, 100]), min_size=1, max_size=4)))
def test_coalescing_keeps_the_meaning_and_never_adds_events(stream, window_ms, data, pauses):
    chunks, error = stream
    gaps = data.draw(st.lists(st.sampled_from([0, 0, 0.5, 1, 3, window_ms - 1, window_ms, window_ms + 1, 2 * window_ms]),
                              min_size=len(chunks) + 1, max_size=len(chunks) + 1))
    log: dict = {"in": [], "out": [], "error": None}
    loop = VirtualClockLoop()
    try:
        loop.run_until_complete(_play(chunks, error, window_ms, gaps, pauses, log))
    finally:
        loop.close()
    out = [chunk for _, chunk in log["out"]]
    assert meaning(out) == meaning(chunks), _explain(out, chunks)
    assert len(out) <= len(chunks)
    if pauses:
        return  # a slow client holds the stream back: the timing below is for one that reads at once
    # A finish, usage, logprobs or signature goes out the moment it came in...
    barrier_times = [t for t, c in log["in"] if not c["choices"] or c["choices"][0]["finish_reason"]
                     or c["choices"][0]["logprobs"] or "reasoning_signature" in c["choices"][0]["delta"]]
    out_times = [t for t, _ in log["out"]]
    assert all(t in out_times for t in barrier_times)
    # ... and every delta is out by the end of the window it opened or joined.
    for n, (arrived, _) in enumerate(log["in"]):
        sent = [c for t, c in log["out"] if t <= arrived + window_ms / 1000 + 1e-6]
        expected = meaning([c for _, c in log["in"][:n + 1]])
        for index, slot in expected["choices"].items():
            got = meaning(sent)["choices"].get(index, {"text": {}, "tools": {}})
            for field, text in slot["text"].items():
                assert got["text"].get(field, "").startswith(text) or text == ""
            for tool, call in slot["tools"].items():
                assert got["tools"].get(tool, {"arguments": ""})["arguments"].startswith(call["arguments"])
