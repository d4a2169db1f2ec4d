"""Wrong-typed values at every field a provider adapter reads, through the real app, to each kind of provider.

One gateway in front of three loopback fakes (an OpenAI-compatible, an Anthropic and a Gemini provider,
each answering in its own gemini_wire format) and the demo model. Each base body below is accepted by every one
of them; hypothesis then puts a value of a wrong JSON type (or nothing, for a required field) at one of
the fields a converter reads and sends the body to each provider: the gemini_answer must be a 4xx in OpenAI's
error shape naming that field, never a 5xx and never a 200.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import parse_config
from tests.fakes.upstream import FakeUpstream, Reply, chat_chunk, sse
from tests.helpers import ANTHROPIC_TEXT_REPLY, GEMINI_OK_STREAM

BOUND = 10  # seconds: a hang-guard on each request, never an assertion on time
MODELS = ("up/gpt-4o-mini", "ant/claude-x", "gem/gemini-2.5-flash", "demo/echo")
OPENAI_STREAM = sse(chat_chunk({"role": "assistant", "content": "ok"}), chat_chunk({}, "stop"),
                    chat_chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}))

MISSING = object()  # "no value": the field is left out

# ------------------------------------------------------------------------------------- the bodies and their fields

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                            "parameters": SCHEMA, "strict": True}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        "extra_content": {"google": {"thought_signature": "SIG"}}}

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief.", "name": "rules"},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {
            "url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [CALL],
         "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12C"},
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{}"}},
        {"role": "function", "name": "get_weather", "content": "13C"},
        {"role": "user", "content": "Thanks", "name": "ann"},
    ],
    "tools": [WEATHER],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "temperature": 0.5, "top_p": 0.9, "presence_penalty": 0.1, "frequency_penalty": 0.1,
    "max_tokens": 50, "max_completion_tokens": 60, "n": 1, "stop": ["END"], "seed": 1, "user": "u-1",
    "logit_bias": {"bias": -100}, "reasoning_effort": "low",
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": SCHEMA, "strict": True}},
    "stream": True, "stream_options": {"include_usage": True},
}
# Parts only some providers take (Anthropic refuses their types by name, a 400 too)
MEDIA_CHAT = {"messages": [{"role": "user", "content": [
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
    {"type": "text", "text": "What are these?"}]}], "stream": False}
NAMED_CHOICE = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
ALLOWED_CHOICE = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER], "tool_choice": {
    "type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}}
COMPLETION = {"prompt": ["Say", "this"], "max_tokens": 5, "temperature": 0.2, "stop": "END", "seed": 3,
              "user": "u-2", "n": 1, "stream": False, "response_format": {"type": "text"}}

BASES = {"chat": CHAT, "media": MEDIA_CHAT, "named_choice": NAMED_CHOICE, "allowed_choice": ALLOWED_CHOICE,
         "completion": COMPLETION}

NUMBER = {"int", "float"}
OPTIONAL = {"null", "missing"}


def _fields(prefix: tuple, types: dict[str, set[str]]) -> list[tuple[tuple, frozenset]]:
    """`{"a.0.b": allowed types}` under `prefix` as (path, allowed types)."""
    return [((*prefix, *(int(k) if k.isdigit() else k for k in key.split(".") if k)), frozenset(allowed))
            for key, allowed in types.items()]


SHARED = _fields((), {
    "model": {"str"}, "stream": {"bool"} | OPTIONAL,
    "temperature": NUMBER | OPTIONAL, "top_p": NUMBER | OPTIONAL, "presence_penalty": NUMBER | OPTIONAL,
    "frequency_penalty": NUMBER | OPTIONAL, "max_tokens": {"int"} | OPTIONAL, "n": {"int"} | OPTIONAL,
    "stop": {"str", "list"} | OPTIONAL, "seed": {"int"} | OPTIONAL, "user": {"str"} | OPTIONAL,
    "response_format": {"dict"} | OPTIONAL, "response_format.type": {"str"},
})
CHAT_ONLY = _fields((), {
    "messages": {"list"}, "max_completion_tokens": {"int"} | OPTIONAL, "stop.0": {"str"},
    "stream_options": {"dict"} | OPTIONAL, "stream_options.include_usage": {"bool"} | OPTIONAL,
    "logit_bias": {"dict"} | OPTIONAL, "logit_bias.bias": NUMBER | {"missing"},
    "reasoning_effort": {"str"} | OPTIONAL, "thinking": {"dict"} | OPTIONAL, "thinking.type": {"str"},
    "thinking.budget_tokens": {"int"} | OPTIONAL,
    "response_format.json_schema": {"dict"} | OPTIONAL, "response_format.json_schema.schema": {"dict"} | OPTIONAL,
    "response_format.json_schema.name": {"str"} | OPTIONAL,
    "tools": {"list"} | OPTIONAL, "tool_choice": {"str", "dict"} | OPTIONAL,
    "parallel_tool_calls": {"bool"} | OPTIONAL,
}) + _fields(("tools", 0), {
    "": {"dict"}, "type": {"str"} | OPTIONAL, "function": {"dict"}, "function.name": {"str"},
    "function.description": {"str"} | OPTIONAL, "function.parameters": {"dict"} | OPTIONAL,
    "function.strict": {"bool"} | OPTIONAL,
})
MESSAGE = {"": {"dict"}, "role": {"str"}}
PER_MESSAGE = [
    _fields(("messages", 0), {**MESSAGE, "content": {"str", "list"}, "name": {"str"} | OPTIONAL}),
    _fields(("messages", 1), {**MESSAGE, "content": {"str", "list"}, "content.0": {"dict"},
                              "content.0.type": {"str"}, "content.0.text": {"str"}}),
    _fields(("messages", 2), {**MESSAGE, "content": {"str", "list"}, "content.1": {"dict"},
                              "content.1.image_url": {"str", "dict"}, "content.1.image_url.url": {"str"},
                              "content.1.image_url.detail": {"str"} | OPTIONAL}),
    _fields(("messages", 3), {**MESSAGE, "content": {"str", "list"} | OPTIONAL, "tool_calls": {"list"} | OPTIONAL,
                              "tool_calls.0": {"dict"}, "tool_calls.0.id": {"str"} | OPTIONAL,
                              "tool_calls.0.type": {"str"} | OPTIONAL, "tool_calls.0.function": {"dict"},
                              "tool_calls.0.function.name": {"str"},
                              "tool_calls.0.function.arguments": {"str", "dict"} | OPTIONAL,
                              "tool_calls.0.extra_content": {"dict"} | OPTIONAL,
                              "tool_calls.0.extra_content.google": {"dict"} | OPTIONAL,
                              "tool_calls.0.extra_content.google.thought_signature": {"str"} | OPTIONAL,
                              "thinking_blocks": {"list"} | OPTIONAL, "thinking_blocks.0": {"dict"},
                              "thinking_blocks.0.type": {"str"} | OPTIONAL,
                              "thinking_blocks.0.thinking": {"str"} | OPTIONAL,
                              "thinking_blocks.0.signature": {"str"} | OPTIONAL}),
    _fields(("messages", 4), {**MESSAGE, "content": {"str", "list"}, "tool_call_id": {"str"}}),
    _fields(("messages", 5), {"function_call": {"dict"} | OPTIONAL, "function_call.name": {"str"},
                              "function_call.arguments": {"str", "dict"} | OPTIONAL}),
    _fields(("messages", 6), {**MESSAGE, "content": {"str", "list"} | OPTIONAL, "name": {"str"} | OPTIONAL}),
]
MEDIA = _fields(("messages", 0, "content"), {
    "0.input_audio": {"dict"}, "0.input_audio.data": {"str"}, "0.input_audio.format": {"str"} | OPTIONAL,
    "1.file": {"dict"}, "1.file.file_data": {"str"} | OPTIONAL, "1.file.filename": {"str"} | OPTIONAL,
    "2.text": {"str"},
})
NAMED = _fields(("tool_choice",), {"type": {"str"}, "function": {"dict"}, "function.name": {"str"}})
ALLOWED = _fields(("tool_choice", "allowed_tools"), {"": {"dict"}, "mode": {"str"}, "tools": {"list"},
                                                     "tools.0": {"dict"}, "tools.0.function": {"dict"},
                                                     "tools.0.function.name": {"str"}})
COMPLETION_ONLY = _fields((), {"prompt": {"str", "list"}, "prompt.0": {"str"}})

FIELDS = {
    "chat": SHARED + CHAT_ONLY + [f for message in PER_MESSAGE for f in message],
    "media": MEDIA,
    "named_choice": NAMED,
    "allowed_choice": ALLOWED,
    "completion": SHARED + COMPLETION_ONLY,
}
CASES = [(base, path, allowed) for base, fields in FIELDS.items() for path, allowed in fields]


# ------------------------------------------------------------------------------------- wrong values

_scalars = {
    "null": st.none(), "bool": st.booleans(), "int": st.integers(-3, 10**6), "float": st.floats(allow_nan=False,
                                                                                                 allow_infinity=False),
    "str": st.text(max_size=6),
}
_json = st.recursive(st.one_of(*_scalars.values()),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                 max_size=3), max_leaves=6)
_by_type = {**_scalars, "list": st.lists(_json, min_size=1, max_size=3),
            "dict": st.dictionaries(st.text(max_size=4), _json, min_size=1, max_size=3)}


def wrong_values(allowed: frozenset, in_list: bool) -> st.SearchStrategy:
    """A value of a JSON type the field does not take; or MISSING for a required field of an object."""
    options = [strategy for name, strategy in _by_type.items() if name not in allowed]
    if "missing" not in allowed and not in_list:
        options.append(st.just(MISSING))
    return st.one_of(options)


@st.composite
def bad_values(draw) -> tuple[str, tuple, object]:
    base, path, allowed = draw(st.sampled_from(CASES))
    return base, path, draw(wrong_values(allowed, isinstance(path[-1], int)))


def replaced(base: dict, path: tuple, value: object) -> dict:
    body = copy.deepcopy(base)
    holder = body
    for key in path[:-1]:
        holder = holder[key]
    if value is MISSING:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return body


def dotted(path: tuple) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


def names_the_field(param: str, path: str) -> bool:
    """The error's param is the field, one of the objects holding it, or a field inside it."""
    def within(inner: str, outer: str) -> bool:
        return inner == outer or (inner.startswith(outer) and inner[len(outer)] in ".[")
    return within(path, param) or within(param, path)


# ------------------------------------------------------------------------------------- one gateway, real sockets


class LiveGateway:
    """The gateway and its three fakes, served on loopback from a loop in a thread of its own, so that
    hypothesis (which runs its examples synchronously) can send each body over a real socket."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runners: list[web.AppRunner] = []
        self.session: aiohttp.ClientSession | None = None
        self.url = ""

    def call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(BOUND * 2)

    def start(self) -> None:
        self.thread.start()
        self.call(self._start())

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self) -> None:
        urls = []
        for steps in (OPENAI_STREAM, ANTHROPIC_TEXT_REPLY, GEMINI_OK_STREAM):
            fake = FakeUpstream()
            fake.default = Reply(steps=[steps])
            urls.append(await self._serve(fake.app))
        config = parse_config(f"""
server: {{max_body_bytes: 65536, sse_keepalive: 15}}
providers:
  - {{name: up, kind: openai, base_url: "{urls[0]}/v1", api_key: sk-test-types}}
  - {{name: ant, kind: anthropic, base_url: "{urls[1]}", api_key: sk-test-types}}
  - {{name: gem, kind: gemini, base_url: "{urls[2]}", api_key: sk-test-types}}
  - {{name: demo, kind: demo, models: [echo], token_interval: 0}}
routes:
  chat: [demo/echo]
""", "types.yaml")
        self.url = await self._serve(create_app(config))
        self.session = aiohttp.ClientSession()

    async def _post(self, path: str, body: bytes) -> tuple[int, str, str]:
        async with asyncio.timeout(BOUND):
            async with self.session.post(self.url + path, data=body,
                                         headers={"Content-Type": "application/json"}) as response:
                return response.status, response.content_type, await response.text()

    def post(self, path: str, body: dict) -> tuple[int, str, str]:
        return self.call(self._post(path, orjson.dumps(body)))

    async def _stop(self) -> None:
        await self.session.close()
        for runner in reversed(self.runners):
            await runner.cleanup()

    def stop(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND)
        self.loop.close()


@pytest.fixture(scope="module")
def live() -> Iterator[LiveGateway]:
    gateway = LiveGateway()
    gateway.start()
    yield gateway
    gateway.stop()


def endpoint(base: str) -> str:
    return "/v1/completions" if base == "completion" else "/v1/chat/completions"


def check_refused(live: LiveGateway, base: str, path: tuple, value: object) -> None:
    field = dotted(path)
    for model in MODELS:
        body = replaced({"model": model, **BASES[base]}, path, value)
        status, content_type, text = live.post(endpoint(base), body)
        assert 400 <= status < 500, (model, status, text)
        assert content_type == "application/json", (model, text)
        error = orjson.loads(text)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert error["type"] == "invalid_request_error" and error["message"], error
        assert isinstance(error["param"], str) and names_the_field(error["param"], field), (model, field, error)


# ------------------------------------------------------------------------------------- the tests


def test_every_field_is_in_its_base_and_has_wrong_types():
    for base, path, allowed in CASES:
        replaced(BASES[base], path, None)  # the path exists in its base
        assert set(_by_type) - allowed, path


@pytest.mark.parametrize("base, model", [(base, model) for base in BASES for model in MODELS
                                         if not (base == "media" and model.startswith("ant/"))])  # no audio there
def test_each_base_body_is_accepted(live, base, model):
    status, _, text = live.post(endpoint(base), {"model": model, **BASES[base]})
    assert status == 200, text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad_values())
def test_wrong_typed_fields_are_a_4xx_naming_the_field_for_every_provider(live, case):
    check_refused(live, *case)


REPRESENTATIVES = {"null": None, "bool": True, "int": 7, "float": 1.5, "str": "x", "list": [1], "dict": {"k": 1}}


def _grid() -> list[tuple[str, tuple, object]]:
    """Every field with one value of each JSON type it does not take (and MISSING when it is required)."""
    out = []
    for base, path, allowed in CASES:
        for name, value in REPRESENTATIVES.items():
            if name not in allowed:
                out.append((base, path, value))
        if "missing" not in allowed and not isinstance(path[-1], int):
            out.append((base, path, MISSING))
    return out


@pytest.mark.parametrize("case", _grid(), ids=lambda case: f"{case[0]}:{dotted(case[1])}={case[2]!r}"[:90])
def test_each_field_with_each_wrong_type(live, case):
    check_refused(live, *case)


# The shapes that were a 500 with a traceback before validation covered them (the providers that failed).
WERE_500S = [
    ("chat", ("messages", 0, "role"), ["user"]),  # all: a list is unhashable in `role in ROLES`
    ("chat", ("messages", 1, "content", 0, "text"), 7),  # anthropic: "".join of a non-string
    ("media", ("messages", 0, "content", 2, "text"), None),  # demo: " ".join of a non-string
    ("chat", ("messages", 3, "tool_calls"), 7),  # anthropic, gemini: iterating a number
    ("chat", ("messages", 3, "tool_calls"), "x"),  # anthropic: a string's characters as calls
    ("chat", ("messages", 3, "tool_calls"), {"k": 1}),  # anthropic
    ("chat", ("messages", 3, "tool_calls", 0), "x"),  # anthropic
    ("chat", ("messages", 3, "tool_calls", 0, "function"), "x"),  # anthropic
    ("chat", ("messages", 3, "tool_calls", 0, "extra_content"), "x"),  # gemini
    ("chat", ("messages", 3, "tool_calls", 0, "extra_content", "google"), [1]),  # gemini
    ("chat", ("messages", 3, "thinking_blocks"), 7),  # anthropic
    ("media", ("messages", 0, "content", 0, "input_audio"), "x"),  # gemini
    ("media", ("messages", 0, "content", 1, "file"), "x"),  # gemini
    ("chat", ("tool_choice",), ["auto"]),  # anthropic: unhashable in a dict lookup
    ("named_choice", ("tool_choice", "function"), "get_weather"),  # anthropic, gemini, demo
    ("allowed_choice", ("tool_choice", "allowed_tools"), "x"),  # gemini
    ("allowed_choice", ("tool_choice", "allowed_tools", "tools"), 7),  # gemini
    ("allowed_choice", ("tool_choice", "allowed_tools", "tools", 0, "function"), "x"),  # gemini
    ("chat", ("tools", 0, "function", "parameters"), [1]),  # demo
    ("chat", ("reasoning_effort",), ["low"]),  # gemini: unhashable
    ("chat", ("response_format", "json_schema"), "x"),  # gemini
]


@pytest.mark.parametrize("case", WERE_500S, ids=lambda case: f"{case[0]}:{dotted(case[1])}={case[2]!r}")
def test_shapes_that_were_500s_are_a_400_naming_their_field(live, case):
    check_refused(live, *case)
