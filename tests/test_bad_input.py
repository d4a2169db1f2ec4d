"""Bad client input over real HTTP: every refusal is OpenAI's error JSON, naming the offending param."""

from __future__ import annotations

import orjson
import pytest

from gateway.app import create_app
from gateway.config import parse_config
from gateway.validation import MAX_MODEL_LENGTH, MAX_NESTING

MAX_BODY = 2048
CONFIG = f"""
server: {{max_body_bytes: {MAX_BODY}, sse_keepalive: 15}}
providers:
  - {{name: demo, kind: demo, models: [echo], token_interval: 0}}
  - name: dormant
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: ${{SURELY_UNSET_VAR_X}}
routes:
  chat: [demo/echo]
"""

CHAT = ("/v1/chat/completions", "/v2/chat/completions")
COMPLETIONS = ("/v1/completions", "/v2/completions")
ALL = CHAT + COMPLETIONS
DROP = object()


def base_body(path: str) -> dict:
    if path.endswith("/chat/completions"):
        return {"model": "demo/echo", "messages": [{"role": "user", "content": "hello"}]}
    return {"model": "demo/echo", "prompt": "hello"}


def changed(path: str, **changes) -> bytes:
    body = base_body(path)
    for key, value in changes.items():
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return orjson.dumps(body)


@pytest.fixture
async def client(aiohttp_client, monkeypatch):
    monkeypatch.delenv("SURELY_UNSET_VAR_X", raising=False)
    config = parse_config(CONFIG, "bad-input.yaml")
    assert not config.providers["dormant"].enabled
    return await aiohttp_client(create_app(config))


async def error_of(response, status: int, param: str | None, code: str | None = None) -> dict:
    """Checks the exact OpenAI error shape and returns the inner `error` object."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", (response.content_type, text)
    assert "Traceback" not in text
    assert "<html" not in text.lower()
    body = orjson.loads(text)
    assert isinstance(body, dict) and list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error


# ---------------------------------------------------------------------------------------------- the base is valid


@pytest.mark.parametrize("path", ALL)
async def test_the_base_bodies_are_accepted(client, path):
    response = await client.post(path, data=changed(path))
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert answer["choices"]
    response = await client.post(path, data=changed(path, stream=True))
    assert response.status == 200
    assert (await response.read()).endswith(b"data: [DONE]\n\n")


# ---------------------------------------------------------------------------------------------- body level

RAW_BODIES = {
    "not json": b"model=demo/echo&prompt=hi",
    "empty": b"",
    "truncated json": b'{"model": "demo/echo", ',
    "invalid utf-8": b'{"model": "demo/echo\xff\xfe"}',
    "infinite number": b'{"model": "demo/echo", "prompt": "x", "messages": [], "temperature": 1e400}',
}


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("name", list(RAW_BODIES))
async def test_body_not_json(client, path, name):
    response = await client.post(path, data=RAW_BODIES[name], headers={"Content-Type": "application/json"})
    error = await error_of(response, 400, None)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("body", [b"[]", b'[{"model": "demo/echo"}]', b"null", b'"text"', b"42", b"true"])
async def test_body_not_an_object(client, path, body):
    await error_of(await client.post(path, data=body), 400, None)


# ---------------------------------------------------------------------------------------------- fields shared

SHARED = [
    ("missing model", {"model": DROP}, "model", "missing_required_parameter"),
    ("model null", {"model": None}, "model", None),
    ("model number", {"model": 42}, "model", "invalid_type"),
    ("model list", {"model": ["demo/echo"]}, "model", "invalid_type"),
    ("model empty", {"model": ""}, "model", None),
    ("temperature 3", {"temperature": 3}, "temperature", None),
    ("temperature -1", {"temperature": -1}, "temperature", None),
    ("temperature hot", {"temperature": "hot"}, "temperature", "invalid_type"),
    ("temperature bool", {"temperature": True}, "temperature", "invalid_type"),
    ("top_p 1.5", {"top_p": 1.5}, "top_p", None),
    ("presence_penalty 3", {"presence_penalty": 3}, "presence_penalty", None),
    ("max_tokens 0", {"max_tokens": 0}, "max_tokens", None),
    ("max_tokens '10'", {"max_tokens": "10"}, "max_tokens", "invalid_type"),
    ("max_tokens 1.5", {"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ("n 0", {"n": 0}, "n", None),
    ("n 500", {"n": 500}, "n", None),
    ("n float", {"n": 2.0}, "n", "invalid_type"),
    ("stream yes", {"stream": "yes"}, "stream", "invalid_type"),
    ("stream 1", {"stream": 1}, "stream", "invalid_type"),
    ("stream_options without stream", {"stream_options": {"include_usage": True}}, "stream_options", None),
    ("stream_options stream false", {"stream": False, "stream_options": {"include_usage": True}},
     "stream_options", None),
    ("stream_options not object", {"stream": True, "stream_options": "usage"}, "stream_options", "invalid_type"),
    ("stop too many", {"stop": ["a", "b", "c", "d", "e"]}, "stop", None),
    ("stop number", {"stop": 5}, "stop", "invalid_type"),
]


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("changes,param,code", [c[1:] for c in SHARED], ids=[c[0] for c in SHARED])
async def test_shared_fields(client, path, changes, param, code):
    error = await error_of(await client.post(path, data=changed(path, **changes)), 400, param, code)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("param", ["n", "max_tokens", "seed"])
@pytest.mark.parametrize("literal,says", [(b"1180591620717411303424", "between -2^63 and 2^63 - 1, got 1.18059e+21"),
                                          (b"-99999999999999999999999", "between -2^63 and 2^63 - 1, got -1e+23"),
                                          (b"1e3", "must be an integer")])
async def test_integer_as_a_huge_or_exponent_literal(client, path, param, literal, says):
    body = changed(path, **{param: 12345})
    field = b'"%s":12345' % param.encode()
    assert field in body
    response = await client.post(path, data=body.replace(field, field[:-5] + literal))
    error = await error_of(response, 400, param)
    assert says in error["message"]  # orjson reads a literal beyond 64 bits as a float: not "not an integer"


@pytest.mark.parametrize("path", ALL)
async def test_streaming_request_with_bad_field_still_gets_json(client, path):
    response = await client.post(path, data=changed(path, stream=True, temperature=3))
    await error_of(response, 400, "temperature")


# ---------------------------------------------------------------------------------------------- endpoint fields

CHAT_CASES = [
    ("missing messages", {"messages": DROP}, "messages", "missing_required_parameter"),
    ("messages null", {"messages": None}, "messages", "missing_required_parameter"),
    ("messages object", {"messages": {"role": "user", "content": "hi"}}, "messages", "invalid_type"),
    ("messages string", {"messages": "hi"}, "messages", "invalid_type"),
    ("messages empty", {"messages": []}, "messages", "invalid_type"),
    ("message not object", {"messages": ["hi"]}, "messages[0]", "invalid_type"),
    ("bad role", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", None),
    ("missing role", {"messages": [{"content": "hi"}]}, "messages[0].role", None),
    ("bad role second", {"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
     "messages[1].role", None),
    ("content number", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ("user content missing", {"messages": [{"role": "user"}]}, "messages[0].content", None),
    ("tool without id", {"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id", None),
    ("tools not list", {"tools": {"type": "function"}}, "tools", "invalid_type"),
    ("tool without name", {"tools": [{"type": "function", "function": {}}]}, "tools[0].function", None),
]


@pytest.mark.parametrize("path", CHAT)
@pytest.mark.parametrize("changes,param,code", [c[1:] for c in CHAT_CASES], ids=[c[0] for c in CHAT_CASES])
async def test_chat_fields(client, path, changes, param, code):
    await error_of(await client.post(path, data=changed(path, **changes)), 400, param, code)


COMPLETION_CASES = [
    ("missing prompt", {"prompt": DROP}, "prompt", "missing_required_parameter"),
    ("prompt number", {"prompt": 7}, "prompt", "invalid_type"),
    ("prompt empty list", {"prompt": []}, "prompt", "invalid_type"),
    ("prompt list of numbers", {"prompt": [1, 2]}, "prompt", "invalid_type"),
]


@pytest.mark.parametrize("path", COMPLETIONS)
@pytest.mark.parametrize("changes,param,code", [c[1:] for c in COMPLETION_CASES],
                         ids=[c[0] for c in COMPLETION_CASES])
async def test_completion_fields(client, path, changes, param, code):
    await error_of(await client.post(path, data=changed(path, **changes)), 400, param, code)


# ---------------------------------------------------------------------------------------------- size, model, provider


@pytest.mark.parametrize("path", ALL)
async def test_too_large_body(client, path):
    body = base_body(path)
    filler = "x" * (MAX_BODY * 2)
    if "messages" in body:
        body["messages"][0]["content"] = filler
    else:
        body["prompt"] = filler
    error = await error_of(await client.post(path, data=orjson.dumps(body)), 413, None, "request_too_large")
    assert str(MAX_BODY) in error["message"]


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("model", ["nope/none", "gpt-unknown", "demo/not-listed", "demo", "demo/", "chat/x"])
async def test_unknown_model(client, path, model):
    error = await error_of(await client.post(path, data=changed(path, model=model)), 404, "model", "model_not_found")
    assert model in error["message"]


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("stream", [False, True])
async def test_disabled_provider(client, path, stream):
    response = await client.post(path, data=changed(path, model="dormant/gpt-4o-mini", stream=stream))
    error = await error_of(response, 503, None, "provider_disabled")
    assert "SURELY_UNSET_VAR_X" in error["message"]
    assert "dormant" in error["message"]


# ---------------------------------------------------------------------------------------------- routing


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_wrong_method(client, path, method):
    response = await client.request(method, path)
    error = await error_of(response, 405, None, "method_not_allowed")
    assert error["message"]
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"),
    ("POST", "/v1/nope"),
    ("POST", "/v3/chat/completions"),
    ("GET", "/v1/chat"),
    ("POST", "/index.html"),  # "/" itself is the playground (GET): a POST there is a 405
])
async def test_unknown_path(client, method, path):
    response = await client.request(method, path, data=b"{}")
    await error_of(response, 404, None, "not_found")


async def test_wrong_method_on_get_route(client):
    response = await client.post("/v1/models", data=b"{}")
    await error_of(response, 405, None, "method_not_allowed")


# ---------------------------------------------------------------------------------------------- nesting


def nested(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


def body_nested(model: str, path: str, depth: int) -> bytes:
    """A body `depth` levels deep (the body itself is level 1), the depth in a field nobody reads. Written
    by hand: orjson refuses to write past 255 levels."""
    body = base_body(path)
    body["model"] = model
    body["x_extra"] = "HERE"
    levels = depth - 1
    return orjson.dumps(body).replace(b'"HERE"', b"[" * levels + b'"x"' + b"]" * levels)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("depth", [65, 254, 255, 256, 600, 1024])
async def test_bodies_nested_past_the_cap_are_a_400_before_anything_else(make_gateway, upstream, path, depth):
    """orjson writes at most 255 levels: bodies 255-1024 deep were a 500 once sent upstream."""
    gateway = await make_gateway()
    response = await gateway.post(path, data=body_nested("up/gpt-4o-mini", path, depth))
    error = await error_of(response, 400, None, "nesting_too_deep")
    assert str(MAX_NESTING) in error["message"]
    assert upstream.received == []


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_a_body_nested_exactly_to_the_cap_is_served(client, path):
    response = await client.post(path, data=body_nested("demo/echo", path, MAX_NESTING))
    assert response.status == 200, await response.text()


async def test_nesting_is_checked_before_the_model(client):
    body = orjson.dumps({"model": 42, "x": nested(MAX_NESTING + 5)})
    await error_of(await client.post("/v1/chat/completions", data=body), 400, None, "nesting_too_deep")


# ---------------------------------------------------------------------------------------------- model names

BAD_MODEL_NAMES = {
    "too long": "demo/" + "e" * MAX_MODEL_LENGTH,
    "newline": "demo/echo\n2026-01-01 INFO gateway: request ok",
    "carriage return": "demo/echo\r",
    "ansi escape": "demo/\x1b[31mecho",
    "nul": "demo/echo\x00",
    "tab": "demo/\techo",
    "del": "demo/echo\x7f",
    "c1 nel": "demo/echo\x85",
    "c1 csi": "demo/\x9b31mecho",
    "line separator": "demo/echo\u2028",
}


@pytest.mark.parametrize("path", ALL)
@pytest.mark.parametrize("name", list(BAD_MODEL_NAMES))
async def test_model_names_too_long_or_with_control_characters_are_a_400_before_routing(client, path, name):
    model = BAD_MODEL_NAMES[name]
    error = await error_of(await client.post(path, data=changed(path, model=model)), 400, "model", "invalid_value")
    assert model not in error["message"]  # not echoed: it is the problem


@pytest.mark.parametrize("path", ALL)
async def test_a_model_name_at_the_length_cap_goes_to_routing(client, path):
    model = "demo/" + "e" * (MAX_MODEL_LENGTH - 5)
    await error_of(await client.post(path, data=changed(path, model=model)), 404, "model", "model_not_found")
