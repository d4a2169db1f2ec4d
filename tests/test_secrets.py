"""Credentials never leave: providers that echo every request header they got, in an HTTP error and in a
stream error event, never show a configured secret to the client, and no log line of any logger holds one."""

from __future__ import annotations

import asyncio
import base64
import logging
import string

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.config import parse_config
from gateway.redaction import CONFIGURED, REDACTED, configured_secrets, redact, redact_configured, redact_log, \
    url_secrets
from tests.helpers import digest

PROVIDER_KEY = "plainkey-PROVIDERSECRET-0001"  # not shaped like any known key: only configuration finds it
HEADER_SECRET = "hdrsecret-APIKEYHEADER-0002"  # in an `api-key:` header, read from the environment
CUSTOM_TOKEN = "custom-TOKEN-literal-0003"  # in `X-Custom-Token:`, written in the file
TENANT = "tenant-FROMENV-0004"  # in `X-Tenant: ${VAR}`: a header named like nothing secret, from a variable
SCHEME_TOKEN = "tokvalue-SCHEME-0005"  # in `Authorization: Token <it>`
USER, PASSWORD = "basicuser-0006", "basicpass-0007"  # a base_url's userinfo
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
CLIENT_KEY = "gwk-client-CLIENTSECRET-0008"
REDIS_PASSWORD = "redispass-0009"
SECRETS = (PROVIDER_KEY, HEADER_SECRET, CUSTOM_TOKEN, TENANT, SCHEME_TOKEN, USER, PASSWORD, BASIC, CLIENT_KEY,
           "PROVIDERSECRET", "APIKEYHEADER", "TOKEN-literal", "FROMENV", "SCHEME", "CLIENTSECRET", REDIS_PASSWORD)
BORING = {"host", "content-length", "accept-encoding", "user-agent", "content-type", "accept"}


class EchoProvider:
    """A provider that answers with every (non-standard) request header it received, either as an HTTP
    400 error or in a stream error event after some content, in the wire format of the path called."""

    def __init__(self) -> None:
        self.mode = "http"
        self.authorizations: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.authorizations.append(request.headers.get("Authorization", ""))
        echoed = " ".join(f"{k}: {v};" for k, v in request.headers.items() if k.lower() not in BORING)
        message = f"you sent {echoed}"
        if self.mode == "http":
            return web.json_response({"error": {"message": message, "type": "invalid_request_error"}}, status=400)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(self.stream(request.path, message))
        await response.write_eof()
        return response

    @staticmethod
    def stream(path: str, message: str) -> bytes:
        def event(payload: dict, name: str | None = None) -> bytes:
            return (f"event: {name}\n" if name else "").encode() + b"data: " + orjson.dumps(payload) + b"\n\n"

        if path.endswith("/messages"):  # Anthropic
            return (event({"type": "message_start", "message": {
                        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
                        "stop_reason": None, "usage": {"input_tokens": 1, "output_tokens": 0}}}, "message_start")
                    + event({"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}, "content_block_start")
                    + event({"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "Hi"}}, "content_block_delta")
                    + event({"type": "error", "error": {"type": "overloaded_error", "message": message}}, "error"))
        if "streamGenerateContent" in path:  # Gemini
            return (event({"candidates": [{"content": {"parts": [{"text": "Hi"}], "role": "model"}, "index": 0}]})
                    + event({"error": {"code": 500, "message": message, "status": "INTERNAL"}}))
        return (event({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"},
                                    "finish_reason": None}]})
                + event({"error": {"message": message, "type": "server_error"}}))


def secrets_yaml(echo_url: str, host_port: str) -> str:
    return f"""
providers:
  - name: hdr
    kind: openai
    base_url: {echo_url}/v1
    api_key: {PROVIDER_KEY}
    headers: {{api-key: "${{TEST_SECRETS_HEADER}}", X-Custom-Token: {CUSTOM_TOKEN},
               X-Tenant: "${{TEST_SECRETS_TENANT}}", anthropic-version: "2023-06-01"}}
    retry: {{attempts: 1}}
  - name: scheme
    kind: openai
    base_url: {echo_url}/v1
    headers: {{Authorization: "Token {SCHEME_TOKEN}"}}
    retry: {{attempts: 1}}
  - name: basic
    kind: openai
    base_url: "http://{USER}:{PASSWORD}@{host_port}/v1"
    retry: {{attempts: 1}}
  - name: ant
    kind: anthropic
    base_url: {echo_url}
    api_key: {PROVIDER_KEY}
    headers: {{X-Custom-Token: {CUSTOM_TOKEN}}}
    retry: {{attempts: 1}}
  - name: gem
    kind: gemini
    base_url: {echo_url}
    api_key: {PROVIDER_KEY}
    headers: {{api-key: "${{TEST_SECRETS_HEADER}}"}}
    retry: {{attempts: 1}}
middlewares: [normalize, ratelimit]
keys:
  - {{id: client, sha256: {digest(CLIENT_KEY)}}}
"""


MODELS = ["hdr/gpt-x", "scheme/gpt-x", "basic/gpt-x", "ant/claude-x", "gem/gemini-x"]


@pytest.fixture
async def echo(aiohttp_server):
    provider = EchoProvider()
    server = await aiohttp_server(provider.app)
    provider.url = str(server.make_url("")).rstrip("/")
    provider.host_port = f"{server.host}:{server.port}"
    return provider


@pytest.fixture
async def gateway(echo, aiohttp_client, monkeypatch):
    monkeypatch.setenv("TEST_SECRETS_HEADER", HEADER_SECRET)
    monkeypatch.setenv("TEST_SECRETS_TENANT", TENANT)
    config = parse_config(secrets_yaml(echo.url, echo.host_port), "secrets.yaml")
    return await aiohttp_client(create_app(config))


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {where}: {text}"


async def ask(gateway, model: str, stream: bool) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = await gateway.post("/v1/chat/completions", json=body,
                                  headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    return await response.text()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("model", MODELS)
async def test_a_provider_echoing_request_headers_in_its_error_shows_no_secret(echo, gateway, model, stream):
    text = await ask(gateway, model, stream)
    assert "you sent" in text and "[redacted]" in text  # the echo reached the client, its secrets did not
    assert_no_secret(text, "the client's answer")


@pytest.mark.parametrize("model", MODELS)
async def test_a_provider_echoing_request_headers_in_a_stream_error_event_shows_no_secret(echo, gateway, model):
    echo.mode = "stream"
    text = await ask(gateway, model, True)
    assert "Hi" in text and "you sent" in text and "[redacted]" in text
    assert text.rstrip().endswith("data: [DONE]")
    assert_no_secret(text, "the stream")


async def test_userinfo_in_base_url_is_sent_as_basic_auth(echo, gateway):
    await ask(gateway, "basic/gpt-x", False)
    assert echo.authorizations == [f"Basic {BASIC}"]


async def test_no_log_line_of_any_logger_holds_a_secret(echo, gateway, caplog):
    caplog.set_level(logging.DEBUG)
    for mode in ("http", "stream"):
        echo.mode = mode
        for model in MODELS:
            await ask(gateway, model, mode == "stream")
    # What a library may log on its own: request headers, a URL with its userinfo, an exception's text.
    logging.getLogger("aiohttp.client").warning("sent %s", {"api-key": HEADER_SECRET, "X-Tenant": TENANT})
    logging.getLogger("aiohttp.server").debug("GET http://%s:%s@host/v1 Authorization: Token %s", USER, PASSWORD,
                                             SCHEME_TOKEN)
    try:
        raise ValueError(f"bad header value {CUSTOM_TOKEN} / {BASIC}")
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    logging.getLogger("gateway").error("client sent Authorization: Bearer %s", CLIENT_KEY,
                                       exc_info=RuntimeError(PROVIDER_KEY))
    assert len(caplog.records) > 10
    assert "Error handling request" in caplog.text and "ValueError: bad header value [redacted]" in caplog.text
    assert_no_secret(caplog.text, "the log")
    for record in caplog.records:
        assert_no_secret(record.getMessage(), "a log record")
        assert_no_secret(record.exc_text or "", "a log record's exception")


async def test_the_redaction_of_logs_is_removed_with_the_last_application(monkeypatch):
    monkeypatch.setenv("TEST_SECRETS_HEADER", HEADER_SECRET)
    monkeypatch.setenv("TEST_SECRETS_TENANT", TENANT)
    original = logging.getLogRecordFactory()
    config = parse_config(secrets_yaml("http://127.0.0.1:1", "127.0.0.1:1"), "secrets.yaml")
    runners = [web.AppRunner(create_app(config)) for _ in range(2)]
    for runner in runners:
        await runner.setup()
    assert logging.getLogRecordFactory() is not original
    await runners[0].cleanup()
    assert logging.getLogRecordFactory() is not original  # the other one still runs
    await runners[1].cleanup()
    assert logging.getLogRecordFactory() is original
    record = logging.getLogger("x").makeRecord("x", logging.INFO, "f", 1, "key %s", (HEADER_SECRET,), None)
    assert record.getMessage() == f"key {HEADER_SECRET}"  # nothing registered any more


def test_every_configured_secret_is_known(monkeypatch):
    monkeypatch.setenv("TEST_SECRETS_HEADER", HEADER_SECRET)
    monkeypatch.setenv("TEST_SECRETS_TENANT", TENANT)
    config = parse_config(secrets_yaml("http://127.0.0.1:1", "127.0.0.1:1") + f"""
limits: {{backend: redis, url: "redis://default:{REDIS_PASSWORD}@127.0.0.1:6379/0"}}
moderation:
  service: {{url: "https://mod:{PASSWORD}@moderation.example/v1/moderations?api_key={SCHEME_TOKEN}"}}
""", "secrets.yaml")
    secrets = configured_secrets(config)
    for secret in (PROVIDER_KEY, HEADER_SECRET, CUSTOM_TOKEN, TENANT, SCHEME_TOKEN, f"Token {SCHEME_TOKEN}", USER,
                   PASSWORD, BASIC, REDIS_PASSWORD):
        assert secret in secrets
    assert "2023-06-01" not in secrets  # a header named like nothing secret, written in the file


def test_url_secrets_decode_percent_escapes():
    assert {"p@ss/word", "p%40ss%2Fword", "u%3Ame:p%40ss%2Fword"} <= set(
        url_secrets("https://u%3Ame:p%40ss%2Fword@host/v1"))
    assert url_secrets("https://host/v1?alt=sse") == []


@pytest.mark.parametrize("line", [
    b"Authorization: Bearer " + CLIENT_KEY.encode() + b"\x01",
    b"Authorization: Bearer\x01" + CLIENT_KEY.encode(),
    b"Authorization:\x00Bearer " + CLIENT_KEY.encode(),
], ids=["after", "in the scheme", "after the colon"])
async def test_a_bad_byte_in_the_authorization_line_never_puts_the_key_in_the_log(gateway, caplog, line):
    """aiohttp logs the request line it refused, with its traceback: the key in it is redacted."""
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(gateway.server.host, gateway.server.port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + line + b"\r\nContent-Length: 0\r\n\r\n")
        async with asyncio.timeout(10):
            assert (await reader.read()).startswith(b"HTTP/1.")
    finally:
        writer.close()
    assert caplog.records
    assert "CLIENTSECRET" not in caplog.text


SECRET_TEXT = st.text(st.sampled_from(string.ascii_letters + string.digits + "-_."), min_size=8, max_size=40).filter(
    lambda s: s not in REDACTED)


@settings(max_examples=200, deadline=None)
@given(secrets=st.lists(SECRET_TEXT, min_size=1, max_size=4), pieces=st.lists(st.text(max_size=30), max_size=6))
def test_no_configured_secret_survives_redaction_whatever_surrounds_it(secrets, pieces):
    text = "".join(piece + secret for piece, secret in zip(pieces + [""] * len(secrets), secrets * 2))
    number = CONFIGURED.add(secrets)
    try:
        for clean in (redact_log(text), redact(text), redact_configured(text)):
            for secret in secrets:
                assert secret not in clean
    finally:
        CONFIGURED.remove(number)


_SHAPED = st.lists(st.sampled_from(["sk-", "AIza", "gsk_", "nvapi-", "pplx-", "Bearer", "Basic", "Authorization",
                                   "x-API-key", "Cookie", "\u212a", ": ", " ", "\\x01", "abcdefgh12", "Z9+/=", "key="]), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_SHAPED | st.text(max_size=80), secrets=st.lists(SECRET_TEXT, max_size=3))
def test_log_redaction_shortcuts_give_what_the_regexes_give(text, secrets):
    """redact_log skips a regex pass when the text cannot match it: the result is the regexes' own."""
    from gateway.redaction import KEY_SHAPES, _shapes

    number = CONFIGURED.add(secrets)
    try:
        text += "".join(secrets[:1])
        pattern = CONFIGURED.pattern
        configured = pattern.sub(REDACTED, text) if pattern is not None else text
        assert redact_log(text) == _shapes(KEY_SHAPES, configured)
    finally:
        CONFIGURED.remove(number)
