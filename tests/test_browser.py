"""The playground, the React example and CORS in a real browser (headless Chromium, tests/browser.py).

The fake upstream holds each token behind an asyncio.Event, so a test sees the page in each state of a
stream (reasoning only, then more and more of the answer) before the stream ends, with no timing involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest
import pytest_asyncio

from gateway.app import create_app
from gateway.config import parse_config
from tests.browser import (BOUND_MS, CHROMIUM_ARGS, build_react_example, require, require_chromium, serving,
                           static_app)
from tests.fakes.upstream import RESET, FakeUpstream, Reply, Wait, chat_chunk, sse

pytestmark = pytest.mark.asyncio(loop_scope="session")
BOUND = 10  # seconds: hang-guard on waits in the test itself
KEY = "gwk-playground-0123456789abcdef"
PROMPT = "Tell me about streaming."


def config_yaml(upstream_url: str, *, keys: bool = False, cors: str = "") -> str:
    keys_yaml = f"keys:\n  - {{id: browser, sha256: {hashlib.sha256(KEY.encode()).hexdigest()}}}\n" if keys else ""
    server = f"server: {{sse_keepalive: 15{', cors: ' + cors if cors else ''}}}\n"
    return server + f"""providers:
  - name: up
    kind: openai
    base_url: {upstream_url}/v1
    api_key: sk-test-0123456789
    models: [gpt-4o-mini]
    timeouts: {{connect: 2, first_byte: 5, idle: 5, total: 30}}
    retry: {{attempts: 1}}
    health: {{max_failures: 0}}
  - {{name: demo, kind: demo, models: [echo], token_interval: 0}}
{keys_yaml}"""


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser():
    executable = require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        require("playwright for Python (pip install -e '.[test]')", False)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def fake_upstream():
    fake = FakeUpstream()
    async with serving(fake.app) as url:
        fake.url = url
        yield fake


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser):
    context = await browser.new_context(viewport={"width": 900, "height": 820})
    page = await context.new_page()
    page.set_default_timeout(BOUND_MS)
    page.problems = []  # uncaught errors and console errors (a CSP violation is one)
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    yield page
    await context.close()


async def text_is(page, selector: str, expected: str) -> str:
    await page.wait_for_function("([selector, expected]) => document.querySelector(selector)?.textContent === expected",
                                 arg=[selector, expected])
    return await page.text_content(selector)


async def state_is(page, state: str) -> None:
    await page.wait_for_function("(state) => document.body.dataset.state === state", arg=state)


def gated_answer(gates: list[asyncio.Event], tail: list | None = None) -> Reply:
    """Role, then each piece after its gate opens: reasoning first, then three pieces of the answer."""
    pieces = [{"reasoning_content": "Thinking it over."}, {"content": "Streams"}, {"content": " arrive"},
              {"content": " piece by piece."}]
    steps: list = [sse(chat_chunk({"role": "assistant", "content": ""}), done=False)]
    for gate, delta in zip(gates, pieces):
        steps += [Wait(gate), sse(chat_chunk(delta), done=False)]
    steps += tail if tail is not None else [sse(chat_chunk({}, "stop"), chat_chunk(
        choices=[], usage={"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}))]
    return Reply(steps=steps)


async def open_playground(page, url: str) -> None:
    await page.goto(url + "/")
    await page.wait_for_selector("#model option[value='up/gpt-4o-mini']", state="attached")
    await page.select_option("#model", "up/gpt-4o-mini")
    await page.fill("#prompt", PROMPT)


async def test_playground_streams_tokens_one_after_another_with_reasoning_apart(browser, page, fake_upstream,
                                                                                tmp_path):
    gates = [asyncio.Event() for _ in range(4)]
    fake_upstream.queue(gated_answer(gates))
    async with serving(create_app(parse_config(config_yaml(fake_upstream.url, keys=True)))) as url:
        requested = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(url + "/")
        # Keys are configured: the model list is a 401 until a key is pasted.
        await page.wait_for_selector("#error:not([hidden])")
        assert "API key" in await page.text_content("#error")
        await page.fill("#key", KEY)
        await page.dispatch_event("#key", "change")
        await page.wait_for_selector("#model option[value='up/gpt-4o-mini']", state="attached")
        await page.select_option("#model", "up/gpt-4o-mini")
        await page.fill("#prompt", PROMPT)
        await page.click("#send")

        await state_is(page, "waiting")  # the 200 and the role came: no token yet
        assert await page.is_visible("#typing")
        assert await page.is_disabled("#send") and not await page.is_disabled("#stop")
        seen = []
        gates[0].set()
        await text_is(page, "#reasoning", "Thinking it over.")
        await state_is(page, "streaming")
        assert not await page.is_visible("#typing")
        seen.append(await page.text_content("#answer"))
        for gate, expected in zip(gates[1:], ["Streams", "Streams arrive", "Streams arrive piece by piece."]):
            gate.set()
            seen.append(await text_is(page, "#answer", expected))
            if expected != "Streams arrive piece by piece.":
                assert await page.get_attribute("body", "data-state") == "streaming"  # not ended yet
        await state_is(page, "done")
        assert seen == ["", "Streams", "Streams arrive", "Streams arrive piece by piece."]
        assert await page.text_content("#reasoning") == "Thinking it over."  # apart from the answer
        assert await page.text_content("#usage") == "5 prompt + 4 completion = 9 tokens"
        assert await page.text_content("#finish") == "stop"
        assert (await page.text_content("#ttft")).endswith(" ms")
        assert await page.text_content("#request-id") != "–"
        assert fake_upstream.received[-1].body["messages"] == [{"role": "user", "content": PROMPT}]
        assert fake_upstream.received[-1].headers["Authorization"] != f"Bearer {KEY}"  # the provider's key went up
        await page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

        await page.reload()  # the key is kept for the tab's life, in sessionStorage
        assert await page.input_value("#key") == KEY
        assert all(r.startswith(url) for r in requested), requested  # nothing from the network
        assert [p for p in page.problems if "401" not in p] == []  # no CSP violation, no script error


async def test_playground_stop_cancels_the_upstream_request(page, fake_upstream, tmp_path):
    gates = [asyncio.Event() for _ in range(4)]
    fake_upstream.queue(gated_answer(gates))
    async with serving(create_app(parse_config(config_yaml(fake_upstream.url)))) as url:
        await open_playground(page, url)
        await page.click("#send")
        gates[0].set()
        gates[1].set()
        await text_is(page, "#answer", "Streams")
        await page.click("#stop")
        await state_is(page, "stopped")
        async with asyncio.timeout(BOUND):
            await fake_upstream.cut_off_event.wait()  # the gateway closed the upstream request
        assert fake_upstream.cut_off == 1 and fake_upstream.completed == 0
        assert await page.text_content("#answer") == "Streams"  # what came stays, marked stopped
        assert not await page.is_disabled("#send")
        await page.screenshot(path=str(tmp_path / "playground-stopped.png"))
        assert page.problems == []


async def test_playground_shows_a_mid_stream_error(page, fake_upstream, tmp_path):
    gates = [asyncio.Event() for _ in range(2)]
    fake_upstream.queue(gated_answer(gates, tail=[RESET]))
    async with serving(create_app(parse_config(config_yaml(fake_upstream.url)))) as url:
        await open_playground(page, url)
        await page.click("#send")
        for gate in gates:
            gate.set()
        await state_is(page, "error")
        assert await page.text_content("#answer") == "Streams"
        assert await page.is_visible("#error")
        assert (await page.text_content("#error")).strip()
        await page.screenshot(path=str(tmp_path / "playground-error.png"))


async def test_playground_paints_a_fast_stream_once_per_frame_not_per_token(page, fake_upstream):
    fake_upstream.queue(burst(300))
    async with serving(create_app(parse_config(config_yaml(fake_upstream.url)))) as url:
        await open_playground(page, url)
        await page.click("#send")
        await state_is(page, "done")
        assert await page.text_content("#answer") == "".join(f"t{i} " for i in range(300))
        paints = await page.evaluate("document.querySelector('#answer').childNodes.length")  # one text node a paint
        assert paints < 150, paints

CROSS_ORIGIN_FETCH = """async ([url, key]) => {
  try {
    const response = await fetch(url + "/v2/chat/completions", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": `Bearer ${key}`, "X-Request-Id": "cors-1"},
      body: JSON.stringify({model: "demo/echo", messages: [{role: "user", content: "hi"}], stream: true}),
    });
    return {status: response.status, requestId: response.headers.get("x-request-id"), body: await response.text()};
  } catch (error) {
    return {refused: String(error)};
  }
}"""


async def test_cors_a_page_on_a_listed_origin_may_call_the_gateway_another_may_not(page, fake_upstream, tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>another origin</title><p>client page</p>")
    pages = static_app(tmp_path)
    async with serving(pages) as allowed, serving(static_app(tmp_path)) as refused:
        cors = f"{{origins: ['{allowed}']}}"
        config = config_yaml(fake_upstream.url, cors=cors, keys=True)
        async with serving(create_app(parse_config(config))) as gateway:
            await page.goto(allowed + "/")
            answer = await page.evaluate(CROSS_ORIGIN_FETCH, [gateway, "wrong-key"])
            assert answer.get("status") == 401, answer  # an error the page can read, not an opaque failure
            assert "Incorrect API key" in answer["body"]
            answer = await page.evaluate(CROSS_ORIGIN_FETCH, [gateway, KEY])
            assert answer.get("status") == 200, answer
            assert answer["requestId"] == "cors-1"  # an exposed header: readable from the script
            assert '"finish_reason":"stop"' in answer["body"] and answer["body"].endswith("data: [DONE]\n\n")

            await page.goto(refused + "/")
            answer = await page.evaluate(CROSS_ORIGIN_FETCH, [gateway, KEY])
            assert "Failed to fetch" in answer.get("refused", ""), answer  # the browser refused it
            assert any("CORS" in problem for problem in page.problems), page.problems



@pytest.fixture(scope="session")
def react_dist(tmp_path_factory):
    return build_react_example(tmp_path_factory.mktemp("react-dist"))


@contextlib.asynccontextmanager
async def react_chat(page, react_dist, fake_upstream):
    """The built React example on its own origin, talking to a gateway that lets that origin in."""
    async with serving(static_app(react_dist)) as origin:
        config = config_yaml(fake_upstream.url, cors=f"{{origins: ['{origin}']}}")
        async with serving(create_app(parse_config(config))) as gateway:
            await page.goto(f"{origin}/?gateway={gateway}&model=up/gpt-4o-mini")
            await page.wait_for_selector(".chat")
            yield gateway


async def chat_status(page, status: str) -> None:
    await page.wait_for_selector(f".chat[data-status='{status}']")


async def say(page, text: str) -> None:
    await page.fill("textarea", text)
    await page.click("button[type=submit]")


def burst(pieces: int) -> Reply:
    """A fast stream: every piece in one write, many of them in one frame."""
    chunks = [chat_chunk({"role": "assistant", "content": ""})]
    chunks += [chat_chunk({"content": f"t{i} "}) for i in range(pieces)] + [chat_chunk({}, "stop")]
    return Reply(steps=[sse(*chunks)])


async def test_react_chat_streams_tokens_batched_to_frames_with_a_typing_indicator(page, react_dist,
                                                                                   fake_upstream, tmp_path):
    gates = [asyncio.Event() for _ in range(4)]
    fake_upstream.queue(gated_answer(gates), burst(300))
    async with react_chat(page, react_dist, fake_upstream):
        await say(page, PROMPT)
        await chat_status(page, "waiting")
        assert await page.is_visible(".typing")  # until the first token
        gates[0].set()
        await text_is(page, ".live .reasoning p", "Thinking it over.")
        assert not await page.is_visible(".typing")
        seen = [await page.text_content(".live") or ""]
        for gate, expected in zip(gates[1:], ["Streams", "Streams arrive", "Streams arrive piece by piece."]):
            gate.set()
            seen.append(await text_is(page, ".turn.assistant:last-child .content", expected))
        await chat_status(page, "done")
        assert seen[1:] == ["Streams", "Streams arrive", "Streams arrive piece by piece."]
        assert "Reasoning" in seen[0] and "Streams" not in seen[0]  # reasoning apart, before the answer
        await page.screenshot(path=str(tmp_path / "react-chat.png"), full_page=True)

        await say(page, "And fast?")
        await chat_status(page, "done")
        stats = await page.text_content(".stats")
        pieces, paints = (int(word) for word in stats.split()[0:4:3])
        assert pieces == 300
        assert paints < pieces / 2, stats  # painted per animation frame, not per token
        sent = fake_upstream.received[-1].body["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]  # the conversation goes along


async def test_react_chat_stop_cancels_the_upstream_request(page, react_dist, fake_upstream):
    gates = [asyncio.Event() for _ in range(4)]
    fake_upstream.queue(gated_answer(gates))
    async with react_chat(page, react_dist, fake_upstream):
        await say(page, PROMPT)
        gates[0].set()
        gates[1].set()
        await text_is(page, ".live .content", "Streams")
        await page.click("text=Stop")
        await chat_status(page, "stopped")
        async with asyncio.timeout(BOUND):
            await fake_upstream.cut_off_event.wait()
        assert fake_upstream.cut_off == 1 and fake_upstream.completed == 0
        assert await page.text_content(".turn.assistant .note") == "stopped"


async def test_react_chat_mid_stream_error_then_retry(page, react_dist, fake_upstream, tmp_path):
    gates = [asyncio.Event() for _ in range(2)]
    fake_upstream.queue(gated_answer(gates, tail=[RESET]), burst(3))
    for gate in gates:
        gate.set()
    async with react_chat(page, react_dist, fake_upstream):
        await say(page, PROMPT)
        await chat_status(page, "error")
        assert "closed the connection" in await page.text_content(".error")
        assert await page.text_content(".live .content") == "Streams"  # the partial answer, marked by the error
        await page.screenshot(path=str(tmp_path / "react-error.png"))
        await page.click("text=Retry")
        await chat_status(page, "done")
        assert await page.text_content(".turn.assistant:last-child .content") == "t0 t1 t2 "
        first, retried = fake_upstream.received[-2:]
        assert first.body["messages"] == retried.body["messages"] == [{"role": "user", "content": PROMPT}]


async def test_react_chat_shows_tool_call_arguments_as_they_stream(page, react_dist, fake_upstream):
    gates = [asyncio.Event() for _ in range(2)]
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    steps = [sse(chat_chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
                 chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}), done=False)]
    for gate, piece in zip(gates, ['ty": "Os', 'lo"}']):
        steps += [Wait(gate), sse(chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                                  done=False)]
    steps.append(sse(chat_chunk({}, "tool_calls")))
    fake_upstream.queue(Reply(steps=steps))
    async with react_chat(page, react_dist, fake_upstream):
        await page.check("input[type=checkbox]")
        await say(page, "Weather in Oslo?")
        seen = [await text_is(page, ".live .tool-call", 'get_weather({"ci)')]
        for gate, expected in zip(gates, ['get_weather({"city": "Os)', 'get_weather({"city": "Oslo"})']):
            gate.set()
            seen.append(await text_is(page, ".tool-call", expected))
        await chat_status(page, "done")
        assert len(seen) == 3
        assert fake_upstream.received[-1].body["tools"][0]["function"]["name"] == "get_weather"
