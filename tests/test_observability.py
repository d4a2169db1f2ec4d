"""What an operator sees: one access-log line per request whatever its fate, text or JSON, and the
Prometheus values after a scripted mix of requests (checked by value, not only by name)."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import re

import aiohttp
import orjson
import pytest
from hypothesis import given, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from gateway.access_log import client_address
from gateway.app import create_app
from gateway.config import ConfigError, parse_config
from gateway.logsetup import JsonFormatter, formatter
from tests.conftest import FAKE_KEY, GatewayTestServer, gateway_yaml
from tests.fakes.upstream import Reply, Wait, chat_chunk, sse
from tests.serving import served
from tests.helpers import BOUND, JSON, bearer, error_body, exchange, free_port, post, read_events, text_of

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
KEY = "gwk-observe-0123456789abcdefSECRET"
RATED = "gwk-rated-0123456789abcdefSECRET"
KEYS = f"""
keys:
  - id: team
    sha256: {hashlib.sha256(KEY.encode()).hexdigest()}
  - id: rated
    sha256: {hashlib.sha256(RATED.encode()).hexdigest()}
    limits: {{requests_per_minute: 1}}
moderation:
  rules:
    - {{term: "forbidden phrase", action: block}}
"""
# up: two tries, and a cooldown once both fail, so that the route `chat` falls back to demo/echo
RESILIENCE = "retry: {attempts: 2, backoff_initial: 0, backoff_max: 0}\n    health: {max_failures: 2, cooldown: 60}"
ROLE = chat_chunk({"role": "assistant", "content": ""})
USAGE = chat_chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                                      "completion_tokens_details": {"reasoning_tokens": 3}})
ANSWER = sse(ROLE, chat_chunk({"content": "Hello"}), chat_chunk({}, "stop"), USAGE)
CHAT = {"model": "up/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def total(scrape: dict, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in scrape.items() if n == name and all((k, v2) in ls for k, v2 in labels.items()))


def data_events(raw: bytes) -> list[bytes]:
    return [block for block in raw.split(b"\n\n") if block.startswith(b"data: ") and block != b"data: [DONE]"]


def access_lines(caplog) -> list[dict]:
    return [r.access_fields() for r in caplog.records if r.name == "gateway.access"]


@pytest.fixture
async def observed(make_gateway):
    return await make_gateway(extra=KEYS, resilience=RESILIENCE)


async def test_metrics_after_a_scripted_mix_of_requests_count_each_fate(observed, upstream, caplog):
    caplog.set_level(logging.INFO)
    sent_up = 0  # chunks the clients got from provider up

    upstream.stream(ANSWER)  # 1. ok stream
    response = await observed.post("/v1/chat/completions", json=STREAM, headers=bearer(KEY))
    assert response.status == 200
    sent_up += len(data_events(await response.read()))

    upstream.stream(ANSWER)  # 2. ok non-stream
    response = await observed.post("/v1/chat/completions", json=CHAT, headers=bearer(KEY))
    assert response.status == 200 and (await response.json())["choices"][0]["finish_reason"] == "stop"
    sent_up += 1

    assert (await observed.post("/v1/chat/completions", json=CHAT)).status == 401  # 3. no key
    response = await observed.post("/v1/chat/completions", json={**CHAT, "model": "ghost/x"}, headers=bearer(KEY))
    assert response.status == 404  # 4. unknown model
    assert (await observed.post("/v1/embeddings", json={}, headers=bearer(KEY))).status == 404  # 4b. unserved path

    upstream.stream(ANSWER)  # 5. the rated key's one request a minute, then a 429
    assert (await observed.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))).status == 200
    sent_up += 1
    assert (await observed.post("/v1/chat/completions", json=CHAT, headers=bearer(RATED))).status == 429

    # 6. moderation: a refused request, and an answer blocked mid-stream
    blocked_input = {**CHAT, "messages": [{"role": "user", "content": "say forbidden phrase"}]}
    response = await observed.post("/v1/chat/completions", json=blocked_input, headers=bearer(KEY))
    assert response.status == 400 and (await response.json())["error"]["code"] == "content_filter"
    upstream.stream(sse(ROLE, chat_chunk({"content": "a forbidden phrase here"}), chat_chunk({}, "stop")))
    response = await observed.post("/v1/chat/completions", json=STREAM, headers=bearer(KEY))
    raw = await response.read()
    assert b'"finish_reason":"content_filter"' in raw
    sent_up += len(data_events(raw))

    # 7. a client that goes away mid-stream
    release = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hi"}), done=False), Wait(release)]))
    response = await observed.post("/v1/chat/completions", json=STREAM, headers=bearer(KEY))
    async with asyncio.timeout(BOUND):  # everything before the upstream's pause: then nothing more can come
        while b'"Hi"' not in (line := await response.content.readline()):
            sent_up += line.startswith(b"data: ")
    sent_up += 1
    response.close()
    async with asyncio.timeout(BOUND):
        await upstream.cut_off_event.wait()
        while not any(line["outcome"] == "client_disconnected" for line in access_lines(caplog)):
            await asyncio.sleep(0.01)
    release.set()

    # 8. up fails twice (retried once, then cooling down): the route falls back to demo/echo
    upstream.queue(*(Reply(status=500, headers=JSON, steps=[error_body("boom")]) for _ in range(2)))
    response = await observed.post("/v1/chat/completions", json={**STREAM, "model": "chat"}, headers=bearer(KEY))
    assert response.status == 200
    demo_sent = len(data_events(await response.read()))

    scrape = samples(await (await observed.get("/metrics")).text())
    requests = "gateway_requests_total"
    chat_up = {"endpoint": "chat", "provider": "up", "model": "gpt-4o-mini"}
    assert value(scrape, requests, **chat_up, status="200", outcome="ok") == 3
    assert value(scrape, requests, endpoint="chat", provider="-", model="-", status="401",
                 outcome="missing_api_key") == 1
    assert value(scrape, requests, endpoint="chat", provider="-", model="-", status="404",
                 outcome="model_not_found") == 1
    assert value(scrape, requests, endpoint="-", provider="-", model="-", status="404", outcome="not_found") == 1
    assert value(scrape, requests, **chat_up, status="429", outcome="rate_limit_exceeded") == 1
    assert value(scrape, requests, **chat_up, status="400", outcome="content_filter") == 1
    assert value(scrape, requests, **chat_up, status="200", outcome="content_filter") == 1
    assert value(scrape, requests, **chat_up, status="200", outcome="client_disconnected") == 1
    assert value(scrape, requests, endpoint="chat", provider="demo", model="echo", status="200", outcome="ok") == 1
    assert value(scrape, "gateway_key_requests_total", key="rated", outcome="rate_limit_exceeded") == 1
    assert value(scrape, "gateway_rate_limited_total", key="rated", limit="requests_per_minute") == 1
    assert value(scrape, "gateway_moderation_actions_total", action="input_block") == 1
    assert value(scrape, "gateway_moderation_actions_total", action="output_block") == 1
    assert value(scrape, "gateway_client_disconnects_total", endpoint="chat") == 1
    assert value(scrape, "gateway_upstream_errors_total", provider="up", code="upstream_error") == 2
    assert value(scrape, "gateway_retries_total") == 1
    assert value(scrape, "gateway_provider_cooldowns_total", provider="up") == 1
    assert value(scrape, "gateway_fallbacks_total", provider="demo") == 1
    assert value(scrape, "gateway_streams_in_flight") == 0
    # tokens: the usage of the ok stream, the ok non-stream answer and the rated key's answer
    for kind, count in (("prompt", 5), ("completion", 7), ("reasoning", 3)):
        assert value(scrape, "gateway_tokens_total", provider="up", model="gpt-4o-mini", kind=kind) == 3 * count
    assert value(scrape, "gateway_chunks_total", provider="up", direction="out") == sent_up
    assert value(scrape, "gateway_chunks_total", provider="demo", direction="out") == demo_sent
    assert value(scrape, "gateway_chunks_total", provider="up", direction="in") >= 5
    # tries: one for each of the five completions that reached a provider at once, three for the fallback
    assert value(scrape, "gateway_tries_per_request_count") == 6
    assert value(scrape, "gateway_tries_per_request_sum") == 5 + 3
    # every upstream HTTP call to up was timed to its headers; streams that got a 200 have a first chunk
    assert value(scrape, "gateway_upstream_time_to_first_byte_seconds_count", provider="up") == len(upstream.received)
    assert value(scrape, "gateway_time_to_first_chunk_seconds_count", provider="up") == 3
    assert value(scrape, "gateway_stream_duration_seconds_count", provider="up") == 3
    assert value(scrape, "gateway_time_to_first_chunk_seconds_count", provider="demo") == 1
    # no raw client text in a label
    assert "ghost" not in await (await observed.get("/metrics")).text()


async def test_keepalives_are_counted_once_per_comment_sent(make_gateway, upstream):
    gateway = await make_gateway(keepalive=0.05)
    release = asyncio.Event()
    upstream.queue(Reply(steps=[sse(ROLE, done=False), Wait(release), sse(chat_chunk({"content": "x"}),
                                                                         chat_chunk({}, "stop"))]))
    response = await gateway.post("/v1/chat/completions", json=STREAM)
    seen = 0
    async with asyncio.timeout(BOUND):
        while seen < 2:
            if await response.content.readline() == b": keep-alive\n":
                seen += 1
    release.set()
    rest = await response.read()
    seen += rest.count(b": keep-alive\n")
    scrape = samples(await (await gateway.get("/metrics")).text())
    assert value(scrape, "gateway_keepalives_total") == seen


def test_model_label_is_other_for_a_model_the_config_does_not_name():
    config = parse_config(gateway_yaml("http://127.0.0.1:9"), "test.yaml")
    from gateway.metrics import Metrics

    metrics = Metrics(config)
    assert metrics.model_label("up", "gpt-4o-mini") == "gpt-4o-mini"  # a route's target
    assert metrics.model_label("demo", "echo") == "echo"  # a provider's models list
    assert metrics.model_label("up", "anything-a-client-wrote") == "other"


# ---------------------------------------------------------------------------------------------- one line each

@pytest.mark.parametrize("method, path, body, headers, status, outcome", [
    ("POST", "/v1/chat/completions", b"{not json", {"Authorization": f"Bearer {KEY}"}, 400, "invalid_json"),
    ("POST", "/v1/chat/completions", orjson.dumps(CHAT), {}, 401, "missing_api_key"),
    ("POST", "/v1/chat/completions", orjson.dumps(CHAT), {"Authorization": "Bearer gwk-wrong-0123456789"}, 401,
     "invalid_api_key"),
    ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "model": "ghost/x"}), {"Authorization": f"Bearer {KEY}"},
     404, "model_not_found"),
    ("POST", "/v1/chat/completions", orjson.dumps(CHAT), {"Authorization": f"Bearer {KEY}",
                                                          "Content-Encoding": "br"}, 415, None),
    ("POST", "/v1/chat/completions", b"x" * 70000, {"Authorization": f"Bearer {KEY}"}, 413, None),
    ("GET", "/v1/models", b"", {}, 401, "missing_api_key"),
    ("POST", "/v1/responses", b"{}", {}, 404, "not_found"),
    ("DELETE", "/v1/chat/completions", b"", {}, 405, "method_not_allowed"),
    ("GET", "/nowhere", b"", {}, 404, "not_found"),
])
async def test_every_refusal_gets_one_access_line(make_gateway, caplog, method, path, body, headers, status,
                                                  outcome):
    gateway = await make_gateway(extra=KEYS)
    caplog.set_level(logging.INFO)
    response = await gateway.request(method, path, data=body, headers={**headers, "X-Request-Id": "given-1"})
    assert response.status == status
    assert response.headers["x-request-id"] == "given-1"
    lines = access_lines(caplog)
    assert len(lines) == 1, lines
    line = lines[0]
    assert (line["status"], line["request_id"], line["method"], line["path"]) == (status, "given-1", method, path)
    assert line["outcome"] == (outcome or (await response.json())["error"]["code"])
    assert KEY not in str(line)


async def test_expect_refusal_before_the_middlewares_gets_its_access_line(make_gateway, caplog):
    gateway = await make_gateway(extra=KEYS)
    caplog.set_level(logging.INFO)
    status, _, _ = await exchange(gateway.server.port, post(b"{}", "Expect: 100-continue", key="gwk-wrong-00000000"))
    assert status == 401
    lines = access_lines(caplog)
    assert [(line["status"], line["outcome"]) for line in lines] == [(401, "invalid_api_key")]


async def test_access_line_names_the_key_the_answer_and_the_fallback(make_gateway, upstream, caplog):
    gateway = await make_gateway(extra=KEYS, resilience=RESILIENCE)
    caplog.set_level(logging.INFO)
    upstream.queue(*(Reply(status=500, headers=JSON, steps=[error_body("boom")]) for _ in range(2)))
    response = await gateway.post("/v1/chat/completions", json={**STREAM, "model": "chat"}, headers=bearer(KEY))
    await response.read()
    [line] = access_lines(caplog)
    assert line["key"] == "team" and line["requested_model"] == "chat"
    assert (line["provider"], line["model"], line["tries"], line["fallback"]) == ("demo", "echo", 3, True)
    assert line["stream"] is True and line["outcome"] == "ok" and line["finish_reason"] == "stop"
    assert line["first_chunk_seconds"] is not None and line["seconds"] >= line["first_chunk_seconds"]
    text = next(r.getMessage() for r in caplog.records if r.name == "gateway.access")
    assert text.startswith(f"request id={line['id']} request_id={line['id']} chat key=team provider=demo model=echo "
                           "stream=True tries=3 outcome=ok status=200 requested_model=chat ")
    assert " fallback=True " in text


# ---------------------------------------------------------------------------------------------- client address

class _Request:
    def __init__(self, remote: str, headers: dict[str, str]) -> None:
        self.remote = remote
        self.headers = headers


def test_client_address_is_taken_from_forwarded_headers_only_from_a_trusted_proxy():
    trusted = parse_config(gateway_yaml("http://127.0.0.1:9"), "t").server.trusted_proxies  # loopback only
    forwarded = {"X-Forwarded-For": "198.51.100.7, 10.0.0.2", "X-Real-IP": "198.51.100.9"}
    assert client_address(_Request("203.0.113.5", forwarded), trusted) == "203.0.113.5"  # not a proxy: its own
    assert client_address(_Request("127.0.0.1", forwarded), trusted) == "10.0.0.2"  # right-most untrusted
    config = parse_config(gateway_yaml("http://127.0.0.1:9", extra="") .replace(
        "server: {", "server: {trusted_proxies: [127.0.0.1, 10.0.0.0/8], "), "t")
    trusted = config.server.trusted_proxies
    assert client_address(_Request("127.0.0.1", forwarded), trusted) == "198.51.100.7"
    assert client_address(_Request("127.0.0.1", {"X-Real-IP": "198.51.100.9"}), trusted) == "198.51.100.9"
    assert client_address(_Request("127.0.0.1", {}), trusted) == "127.0.0.1"


def test_trusted_proxies_and_logging_are_validated_with_their_key_path():
    base = gateway_yaml("http://127.0.0.1:9")
    bad = base.replace("server: {", "server: {trusted_proxies: [nonsense], ") + "logging: {level: LOUD, format: xml}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(bad, "t.yaml")
    text = "\n".join(str(problem) for problem in caught.value.problems)
    assert "server.trusted_proxies[0]" in text and "logging.level" in text and "logging.format" in text
    config = parse_config(base + "logging: {level: debug, format: json}\n", "t.yaml")
    assert (config.logging.level, config.logging.format) == ("DEBUG", "json")
    assert (parse_config(base, "t").logging.level, parse_config(base, "t").logging.format) == ("INFO", "text")


# ---------------------------------------------------------------------------------------------- formats

def test_json_log_lines_are_one_object_each_with_the_access_fields_unescaped_once():
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "%s", ("text line",), None)
    record.access_fields = lambda: {"id": "a", "requested_model": 'up/m"\n\u2028x', "status": 200}
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["event"] == "request" and parsed["status"] == 200 and parsed["logger"] == "gateway.access"
    assert parsed["requested_model"] == 'up/m"\n\u2028x'  # JSON's own escaping, once: no \\n inside
    other = logging.LogRecord("gateway", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    assert orjson.loads(formatter("json").format(other))["message"] == "hello world"
    assert formatter("text").format(other).endswith("WARNING gateway: hello world")


async def test_unserved_openai_paths_answer_an_openai_404_naming_the_served_endpoints(gateway):
    for path in ("/v1/responses", "/v1/embeddings", "/v2/audio/speech"):
        response = await gateway.post(path, json={"model": "x"})
        assert response.status == 404
        error = (await response.json())["error"]
        assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
        assert f"POST {path}" in error["message"]
        assert "POST /v1/chat/completions" in error["message"] and "GET /v1/models" in error["message"]


def test_disabled_providers_are_one_warning_line(caplog):
    caplog.set_level(logging.WARNING)
    extra = "".join(f"  - {{name: off{i}, kind: openai, base_url: http://127.0.0.1:9/v1, api_key: '${{UNSET_OFF_{i}}}'}}\n"
                    for i in range(3))
    config = parse_config(gateway_yaml("http://127.0.0.1:9", extra_provider=extra), "t.yaml")
    create_app(config)
    lines = [r.getMessage() for r in caplog.records if "disabled" in r.getMessage()]
    assert lines == ["3 provider(s) disabled until their variables are set: off0 (UNSET_OFF_0), off1 (UNSET_OFF_1), "
                     "off2 (UNSET_OFF_2)"]


# ---------------------------------------------------------------------------------------------- secrets

@pytest.mark.parametrize("form", ["text", "json"])
async def test_no_log_line_of_a_run_holds_a_provider_or_client_key(upstream, tmp_path, form):
    port = free_port()
    config = gateway_yaml(upstream.url, extra=KEYS + f"logging: {{level: DEBUG, format: {form}}}\n").replace(
        "server: {", f"server: {{host: 127.0.0.1, port: {port}, ")
    upstream.stream(ANSWER)
    upstream.queue(*(Reply(status=401, headers=JSON, steps=[error_body(f"bad key {FAKE_KEY}")]) for _ in range(2)))
    wrong = "sk-proj-WRONGCLIENTKEY0123456789abcdef"
    async with served(config, port, tmp_path) as (process, log):
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            for headers, body in ((bearer(KEY), STREAM), (bearer(KEY), CHAT), (bearer(wrong), CHAT),
                                  ({"Authorization": f"Basic {KEY}"}, CHAT), (bearer(RATED), {**CHAT, "model": wrong}),
                                  (bearer(KEY), {**CHAT, "model": f"up/{FAKE_KEY}"})):
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
        process.terminate()
        process.wait(BOUND)
    lines = log.read_text().splitlines()
    requests = [line for line in lines if ("request id=" in line or '"event":"request"' in line)
                and "/healthz" not in line]
    assert len(requests) == 6, lines
    for line in lines:
        for secret in (FAKE_KEY, KEY, RATED, wrong, FAKE_KEY[8:], KEY[10:]):
            assert secret not in line, line
        if form == "json":
            assert isinstance(orjson.loads(line), dict), line


async def test_moderation_block_on_input_or_output_is_logged_content_filter_not_ok(make_gateway, upstream, caplog):
    gateway = await make_gateway(extra=KEYS)
    caplog.set_level(logging.INFO)
    blocked_input = {**STREAM, "messages": [{"role": "user", "content": "say forbidden phrase"}]}
    assert (await gateway.post("/v1/chat/completions", json=blocked_input, headers=bearer(KEY))).status == 400
    for body in (STREAM, CHAT):
        upstream.stream(sse(ROLE, chat_chunk({"content": "a forbidden phrase here"}), chat_chunk({}, "stop")))
        response = await gateway.post("/v1/chat/completions", json=body, headers=bearer(KEY))
        assert response.status == 200 and b"content_filter" in await response.read()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request id=")]
    assert len(lines) == 3 and all(" outcome=content_filter " in line for line in lines), lines


@given(st.text(max_size=300), st.text(max_size=300), st.text(max_size=50))
def test_access_line_is_one_bounded_line_whatever_the_client_sends(model, forwarded, method):
    """Client text (the model, a forwarded address through a trusted proxy, the method) never breaks the line."""
    from gateway.access_log import AccessRecord, _json_fields, text_line

    trusted = parse_config(gateway_yaml("http://127.0.0.1:9"), "t").server.trusted_proxies
    client = client_address(_Request("127.0.0.1", {"X-Forwarded-For": forwarded}), trusted)[:200]
    record = AccessRecord("a" * 32, "a" * 32, client, method[:20], "/v1/chat/completions", 0.0,
                          requested_model=model[:200])
    fields = record.fields()
    line = text_line(fields)
    assert not CONTROL.search(line) and len(line) < 3000
    json_line = orjson.dumps(_json_fields(fields)).decode()
    assert not CONTROL.search(json_line) and "\n" not in json_line


@given(st.text(max_size=300) | st.text(alphabet="ab\\\x1b\x85\u2028\u202e\u00a0 ", max_size=300))
def test_access_line_values_are_written_as_escape_writes_them(value):
    """The access line's shortcut for values with nothing to escape gives escape()'s text exactly."""
    from gateway.access_log import text_line
    from gateway.logfmt import escape

    line = text_line({"id": "i", "request_id": "r", "endpoint": "chat", "requested_model": value})
    assert line == f"request id=i request_id=r chat requested_model={escape(value)}"


_MAYBE_TEXT = st.none() | st.text(max_size=40) | st.text(alphabet="ab\\\x1b\u2028 ", max_size=8) | st.text(min_size=201, max_size=220)
_USAGE = st.none() | st.fixed_dictionaries({}, optional={
    "prompt_tokens": st.integers(0, 99) | st.booleans() | st.none(), "completion_tokens": st.integers(0, 99),
    "completion_tokens_details": st.none() | st.fixed_dictionaries({}, optional={"reasoning_tokens": st.integers(0, 9)})})


@given(st.builds(lambda texts, stream, numbers, first, usage, moderation, fallback: _record(
    texts, stream, numbers, first, usage, moderation, fallback),
    st.lists(_MAYBE_TEXT, min_size=10, max_size=10), st.none() | st.booleans(),
    st.tuples(st.integers(0, 9), st.integers(0, 599), st.floats(0, 1e4)), st.none() | st.floats(0, 1e4), _USAGE,
    st.lists(st.sampled_from(["input_block", "output_redact", "a\nb"]), max_size=3), st.booleans()))
def test_access_line_written_field_by_field_is_text_line_of_its_fields(record):
    """finish() writes record_line(record): the same text as text_line(record.fields())."""
    from gateway.access_log import record_line, text_line

    assert record_line(record) == text_line(record.fields())


def _record(texts, stream, numbers, first, usage, moderation, fallback):
    from gateway.access_log import AccessRecord

    key, provider, model, outcome, requested, finish_reason, stream_id, resume, endpoint, path = texts
    record = AccessRecord("a" * 32, "r1", "127.0.0.1", "POST", path or "/v1/chat/completions", 0.0,
                          endpoint=endpoint or "chat", key=key, provider=provider, model=model, stream=stream,
                          outcome=outcome, requested_model=requested, finish_reason=finish_reason,
                          stream_id=stream_id, resume=resume, fallback=fallback, usage=usage)
    record.tries, record.status, record.seconds = numbers
    record.first_chunk = first
    record.moderation.extend(moderation)
    return record


async def test_moderation_redactions_are_logged_and_counted(make_gateway, upstream, caplog):
    gateway = await make_gateway(extra=KEYS.replace('{term: "forbidden phrase", action: block}',
                                                    '{term: "forbidden phrase", action: block}\n    - {term: "darn", action: redact}'))
    caplog.set_level(logging.INFO)
    upstream.stream(sse(ROLE, chat_chunk({"content": "oh d"}), chat_chunk({"content": "arn it"}), chat_chunk({}, "stop")))
    response = await gateway.post("/v1/chat/completions", json=STREAM, headers=bearer(KEY))
    assert text_of(await read_events(response)) == "oh *** it"
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request id=")]
    assert len(lines) == 1 and " outcome=ok " in lines[0] and "moderation=output_redact" in lines[0], lines
    metrics = await (await gateway.get("/metrics")).text()
    assert 'gateway_moderation_actions_total{action="output_redact"} 1.0' in metrics
