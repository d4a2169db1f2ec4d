"""Retries, fallbacks and provider health before the first byte reaches the client."""

from __future__ import annotations

import email.utils
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import errors
from gateway.config import RetryPolicy
from gateway.errors import GatewayError
from gateway.failover import RetryDecision, backoff, retry_after, should_retry
from tests.fakes.upstream import HANG, RESET, Reply, chat_chunk, sse
from tests.helpers import ANTHROPIC_TEXT_REPLY, CHAT, JSON, ROLE, assert_openai_error, error_body, read_events

QUICK_RETRIES = "retry: {attempts: 3, backoff_initial: 0, backoff_max: 0, retry_after_max: 1}\n    health: {max_failures: 0}"
ROUTES = "  both: [ant/claude-x, up/gpt-4o-mini]\n  solo: [up/gpt-4o-mini]"
ANSWER = sse(ROLE, chat_chunk({"content": "Hello"}), chat_chunk({}, "stop"))


def failure(status: int, headers: dict | None = None) -> Reply:
    return Reply(status=status, headers={**JSON, **(headers or {})}, steps=[error_body(f"failure {status}")])


@pytest.fixture
async def resilient(make_gateway):
    return await make_gateway(resilience=QUICK_RETRIES, extra_routes=ROUTES,
                              timeouts="{connect: 2, first_byte: 0.3, idle: 5, total: 30}")


def contents(events: list[bytes]) -> str:
    text = ""
    for event in events:
        payload = orjson.loads(event.removeprefix(b"data: ")) if event != b"data: [DONE]" else {}
        for choice in payload.get("choices") or ():
            text += choice["delta"].get("content") or ""
    return text


async def stream(gateway, model: str = "up/gpt-4o-mini", **extra):
    return await gateway.post("/v2/chat/completions", json={**CHAT, "model": model, **extra})


@pytest.mark.parametrize("first", [
    pytest.param(lambda: failure(500), id="500"),
    pytest.param(lambda: failure(502), id="502"),
    pytest.param(lambda: failure(503), id="503"),
    pytest.param(lambda: failure(529), id="529"),
    pytest.param(lambda: failure(429, {"retry-after": "0"}), id="429-retry-after"),
    pytest.param(lambda: Reply(before_headers=RESET), id="reset-before-headers"),
    pytest.param(lambda: Reply(before_headers=HANG), id="hang-before-headers"),
    pytest.param(lambda: Reply(steps=[sse(ROLE, done=False), HANG]), id="hang-after-role-chunk"),
    pytest.param(lambda: Reply(steps=[b"<html>Bad gateway</html>"], headers={"Content-Type": "text/html"}),
                 id="html-with-200"),
    pytest.param(lambda: Reply(steps=[sse(ROLE, {"error": {"message": "overloaded", "code": 503}})]),
                 id="200-then-error-chunk"),
    pytest.param(lambda: Reply(steps=[sse(ROLE, done=False), RESET]), id="reset-before-content"),
    pytest.param(lambda: Reply(steps=[sse(ROLE)]), id="ends-before-content"),
])
async def test_a_failure_before_content_is_retried_and_the_client_sees_one_clean_stream(upstream, resilient, first):
    upstream.queue(first(), Reply(steps=[ANSWER]))
    response = await stream(resilient)
    assert response.status == 200
    events = await read_events(response)
    assert contents(events) == "Hello"
    assert events[-1] == b"data: [DONE]"
    roles = [e for e in events if b'"role":"assistant"' in e]
    assert len(roles) == 1, "the failed try's role chunk must not reach the client"
    assert len(upstream.received) == 2


async def test_retries_stop_after_attempts_and_the_last_failure_is_reported(upstream, resilient):
    upstream.queue(failure(503), failure(500), failure(529))
    response = await stream(resilient, model="solo")
    assert response.status == 502
    error = assert_openai_error(await response.json())
    assert error["code"] == "upstream_error" and "after 3 tries" in error["message"]
    assert "HTTP 529" in error["message"], "the last failure is the one reported"
    assert len(upstream.received) == 3


async def test_a_client_error_is_not_retried(upstream, resilient):
    upstream.queue(failure(400), Reply(steps=[ANSWER]))
    response = await stream(resilient, model="both")  # not even the fallback: the request itself is wrong
    upstream.replies.clear()
    assert response.status == 400
    assert len(upstream.received) == 1


async def test_fallback_answers_when_the_first_target_fails_past_its_retries(upstream, resilient):
    overloaded = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    upstream.queue(*[Reply(steps=[overloaded])] * 3, Reply(steps=[ANSWER]))
    response = await stream(resilient, model="both")
    assert response.status == 200
    events = await read_events(response)
    assert contents(events) == "Hello"
    assert [r.path for r in upstream.received] == ["/v1/messages"] * 3 + ["/v1/chat/completions"]
    assert response.headers["x-request-id"]


async def test_anthropic_overloaded_after_message_start_is_retried(upstream, resilient):
    start, _, rest = ANTHROPIC_TEXT_REPLY.partition(b"event: content_block_start")
    overloaded = start + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n'
    upstream.queue(Reply(steps=[overloaded]), Reply(steps=[ANTHROPIC_TEXT_REPLY]))
    response = await stream(resilient, model="ant/claude-x", stream=False)
    assert response.status == 200, await response.text()
    assert (await response.json())["choices"][0]["message"]["content"] == "Hi"


async def test_an_auth_failure_moves_to_the_next_target_without_retrying(upstream, resilient):
    upstream.queue(failure(401), Reply(steps=[ANSWER]))
    response = await stream(resilient, model="both")
    assert response.status == 200
    assert contents(await read_events(response)) == "Hello"
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/chat/completions"]


async def test_a_long_retry_after_moves_on_at_once(upstream, resilient):
    upstream.queue(failure(429, {"retry-after": "120"}), Reply(steps=[ANSWER]))
    response = await stream(resilient, model="both")
    assert response.status == 200
    assert len(upstream.received) == 2, "a retry-after past the cap is not waited for"
    health = (await (await resilient.get("/admin/health")).json())["providers"]["ant"]
    assert health["state"] == "cooling_down" and health["cooldown_seconds_left"] > 100


@pytest.mark.parametrize(("replies", "status", "code"), [
    ([failure(429, {"retry-after": "7", "x-ratelimit-remaining-requests": "0"})], 429, "upstream_rate_limited"),
    ([Reply(before_headers=HANG)] * 3, 504, "upstream_first_byte_timeout"),
    ([Reply(before_headers=RESET)] * 3, 502, "upstream_reset"),
    ([failure(503)] * 3, 502, "upstream_error"),
])
async def test_when_every_try_fails_the_status_that_matters(upstream, resilient, replies, status, code):
    upstream.queue(*replies)
    response = await stream(resilient, model="solo")
    assert response.status == status
    assert assert_openai_error(await response.json())["code"] == code
    if status == 429:
        assert response.headers["Retry-After"] == "7"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert len(upstream.received) == 1, "a retry-after past the cap is not retried"


async def test_a_non_stream_answer_is_retried_even_after_content(upstream, resilient):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hel"}), done=False), RESET]),
                   Reply(steps=[ANSWER]))
    response = await stream(resilient, stream=False)
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "Hello"


async def test_a_failure_after_content_is_not_retried(upstream, resilient):
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "Hel"}), done=False), RESET]),
                   Reply(steps=[ANSWER]))
    response = await stream(resilient)
    events = await read_events(response)
    upstream.replies.clear()
    assert contents(events) == "Hel"
    assert b"upstream_reset" in events[-2] and events[-1] == b"data: [DONE]"
    assert len(upstream.received) == 1


async def test_a_failing_provider_cools_down_and_the_fallback_answers_first(upstream, make_gateway):
    gateway = await make_gateway(resilience="retry: {attempts: 1}\n    health: {max_failures: 2, cooldown: 60}",
                                 extra_routes=ROUTES)
    for _ in range(2):
        upstream.queue(failure(500), Reply(steps=[ANSWER]))
        response = await stream(gateway, model="both")
        assert contents(await read_events(response)) == "Hello"
    assert [r.path for r in upstream.received] == ["/v1/messages", "/v1/chat/completions"] * 2
    upstream.queue(Reply(steps=[ANSWER]))
    response = await stream(gateway, model="both")
    assert contents(await read_events(response)) == "Hello"
    assert upstream.received[-1].path == "/v1/chat/completions" and len(upstream.received) == 5
    verbose = await (await gateway.get("/admin/health")).json()
    assert verbose["providers"]["ant"]["state"] == "cooling_down"
    assert verbose["providers"]["ant"]["consecutive_failures"] == 2
    assert verbose["providers"]["ant"]["last_error"] == "upstream_error"
    assert verbose["providers"]["up"]["state"] == "ok"

    response = await stream(gateway, model="ant/claude-x")  # its only target is cooling down
    assert response.status == 503
    assert assert_openai_error(await response.json())["code"] == "no_provider_available"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert len(upstream.received) == 5


async def test_a_success_clears_the_failure_count(upstream, make_gateway):
    gateway = await make_gateway(resilience="retry: {attempts: 1}\n    health: {max_failures: 2, cooldown: 60}")
    for reply in (failure(500), Reply(steps=[ANSWER]), failure(500), Reply(steps=[ANSWER])):
        upstream.queue(reply)
        await (await stream(gateway)).read()
    verbose = await (await gateway.get("/admin/health")).json()
    assert verbose["providers"]["up"]["state"] == "ok"
    assert verbose["providers"]["up"]["failures"] == 2 and verbose["providers"]["up"]["successes"] == 2


async def test_on_malformed_error_fails_the_try(upstream, make_gateway):
    gateway = await make_gateway(resilience="retry: {attempts: 2, backoff_initial: 0}\n    on_malformed: error")
    upstream.queue(Reply(steps=[sse(ROLE, b"{not json", chat_chunk({"content": "x"}))]), Reply(steps=[ANSWER]))
    response = await stream(gateway)
    assert contents(await read_events(response)) == "Hello"
    upstream.queue(Reply(steps=[sse(ROLE, chat_chunk({"content": "x"}), b"{not json")]))
    response = await stream(gateway)
    events = await read_events(response)
    assert b"upstream_malformed" in events[-2]


async def test_on_malformed_skip_is_the_default(upstream, gateway):
    upstream.queue(Reply(steps=[sse(ROLE, b"{not json", chat_chunk({"content": "x"}), chat_chunk({}, "stop"))]))
    events = await read_events(await stream(gateway))
    assert contents(events) == "x" and events[-1] == b"data: [DONE]" and b"error" not in events[-2]


def test_retry_after_forms():
    def error(headers):
        return GatewayError(429, "x", headers=headers)

    assert retry_after(error({"Retry-After": "3"})) == 3
    assert retry_after(error({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after(error({"Retry-After": date})) <= 30
    assert retry_after(error({"Retry-After": "soon"})) is None
    assert retry_after(error({})) is None


@given(attempt=st.integers(1, 40), initial=st.floats(0, 10), maximum=st.floats(0, 60))
def test_backoff_stays_within_half_and_all_of_its_capped_step(attempt, initial, maximum):
    step = min(maximum, initial * 2 ** (attempt - 1))
    assert step / 2 <= backoff(attempt, initial, maximum) <= step


# ---------------------------------------------------------------------------------------------- the retry decision
# should_retry is a plain function of the error's own rule, the try number and the provider's policy.

POLICY = RetryPolicy(attempts=3, backoff_initial=0.5, backoff_max=4.0, retry_after_max=5.0)
SAME_TARGET = [
    errors.upstream_timeout("p", "first_byte"), errors.upstream_timeout("p", "provider"),
    errors.upstream_silence_timeout("p", 30), errors.upstream_unreachable("p", "refused"),
    errors.upstream_reset("p"), errors.upstream_truncated("p"), errors.upstream_bad_stream("p", "x"),
    errors.upstream_malformed("p"), errors.upstream_stream_error("p", "x"),
    errors.upstream_rate_limited("p", "slow down", {}), errors.upstream_failed("p", 500, "", {}),
]
NEXT_TARGET = [errors.upstream_auth_failed("p", 401, "KEY"), errors.upstream_not_found("p", "no model"),
               errors.upstream_redirect("p", 302, "")]
NEVER = [errors.upstream_bad_request("p", "bad"), errors.invalid_param("model", "bad"),
         GatewayError(400, "anything a request is at fault for")]


@pytest.mark.parametrize("error", SAME_TARGET, ids=lambda e: e.code)
def test_should_retry_tries_the_same_target_again_after_a_backoff_for_a_passing_failure(error):
    decision = should_retry(error, 1, POLICY)
    assert decision.action == "same" and 0.25 <= decision.delay <= 0.5 and decision.cool_for == 0
    assert error.counts_against_health


@pytest.mark.parametrize("error", SAME_TARGET, ids=lambda e: e.code)
def test_should_retry_moves_to_the_next_target_after_the_last_attempt(error):
    assert should_retry(error, POLICY.attempts, POLICY) == RetryDecision("next")


@pytest.mark.parametrize("error", NEXT_TARGET, ids=lambda e: e.code)
def test_should_retry_moves_on_at_once_when_the_same_target_would_fail_the_same_way(error):
    assert should_retry(error, 1, POLICY) == RetryDecision("next")


def test_a_wrong_model_name_does_not_count_against_the_providers_health():
    assert not errors.upstream_not_found("p", "no model").counts_against_health
    assert errors.upstream_auth_failed("p", 403, "KEY").counts_against_health


@pytest.mark.parametrize("error", NEVER, ids=lambda e: e.code)
def test_should_retry_never_retries_what_the_request_is_at_fault_for(error):
    assert should_retry(error, 1, POLICY) == RetryDecision("never")
    assert not error.counts_against_health


def test_should_retry_waits_at_least_the_providers_retry_after():
    error = errors.upstream_rate_limited("p", "slow down", {"Retry-After": "3"})
    assert should_retry(error, 1, POLICY) == RetryDecision("same", delay=3.0)


def test_should_retry_moves_on_and_cools_down_for_a_retry_after_beyond_retry_after_max():
    error = errors.upstream_rate_limited("p", "slow down", {"retry-after-ms": "9000"})
    assert should_retry(error, 1, POLICY) == RetryDecision("next", cool_for=9.0)
    auth = GatewayError(502, "x", code="upstream_auth_failed", headers={"Retry-After": "60"}, retry="next",
                        counts_against_health=True)
    assert should_retry(auth, 1, POLICY) == RetryDecision("next", cool_for=60.0)


@given(attempt=st.integers(1, 10), attempts=st.integers(1, 10))
def test_should_retry_tries_a_target_at_most_its_attempts(attempt, attempts):
    policy = RetryPolicy(attempts=attempts, backoff_initial=0, backoff_max=0)
    expected = "same" if attempt < attempts else "next"
    assert should_retry(errors.upstream_reset("p"), attempt, policy).action == expected


# ---------------------------------------------------------------------------------------------- errors are values


def test_a_gateway_error_is_read_only_once_made():
    error = errors.upstream_rate_limited("p", "slow down", {"Retry-After": "3"})
    for name in ("status", "message", "type", "code", "param", "headers", "retry", "counts_against_health"):
        with pytest.raises(AttributeError):
            setattr(error, name, None)
    with pytest.raises(TypeError):
        error.headers["Retry-After"] = "0"  # type: ignore[index]


def test_with_message_makes_a_new_error_and_leaves_the_first_alone():
    error = errors.upstream_rate_limited("p", "slow down", {"Retry-After": "3"})
    longer = error.with_message(f"{error.message} (after 2 tries)")
    assert error.message == "provider 'p' is rate limiting: slow down"
    assert longer.message.endswith("(after 2 tries)") and longer is not error
    assert (longer.status, longer.type, longer.code, dict(longer.headers), longer.retry,
            longer.counts_against_health) == (429, "rate_limit_error", "upstream_rate_limited",
                                              {"Retry-After": "3"}, "same", True)


def test_the_headers_a_caller_passed_are_copied():
    headers = {"Retry-After": "3"}
    error = GatewayError(429, "x", headers=headers)
    headers["Retry-After"] = "99"
    assert error.headers == {"Retry-After": "3"}
