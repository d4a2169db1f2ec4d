"""Golden tests: an upstream stream file in, the exact client response out.

tests/golden/<kind>/<case>.upstream.sse   the bytes the fake provider sends
tests/golden/<kind>/<case>.request.json   the client's request (optional; `_endpoint`, `_split` steer the test)
tests/golden/<kind>/<case>.client.http    what the client must get: a status line, then the exact body
tests/golden/<kind>/<case>.upstream-request.json   what the fake provider must get: the path (and query),
                                          the headers that matter (UPSTREAM_HEADERS), and the JSON body

Each case runs with the upstream bytes written whole and cut into small reads: the client must see
the same bytes either way. So both ends of the exchange are pinned: request conversion as tightly as
the stream. `GOLDEN_UPDATE=1 pytest tests/test_golden.py` rewrites the .client.http and
.upstream-request.json files; review their diff before committing.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from gateway.providers import ADAPTERS
from tests.conftest import FAKE_KEY

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.upstream.sse"))
DEFAULT_REQUEST = {"model": "up/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


# The request headers an adapter decides; Host, User-Agent, Content-Length and the like are aiohttp's.
UPSTREAM_HEADERS = ("accept", "anthropic-version", "authorization", "content-type", "x-api-key", "x-goog-api-key")


def upstream_request(received) -> str:
    """The request the fake provider got, as the .upstream-request.json file holds it (the key masked)."""
    headers = {name.lower(): value.replace(FAKE_KEY, "<key>") for name, value in received.headers.items()
               if name.lower() in UPSTREAM_HEADERS}
    shown = {"path": received.path, "headers": dict(sorted(headers.items())), "body": received.body}
    return json.dumps(shown, indent=2, ensure_ascii=False) + "\n"


# The kinds gateway_yaml (conftest.py) has a provider for; a case of any other kind asks for `<kind>/<model>`.
_BUILT_IN_KINDS = ("openai", "anthropic", "gemini")


@pytest.fixture
async def gateway(make_gateway, upstream):
    """The tests' gateway, plus a provider named after each other kind with cases here: a new wire format's
    golden cases need no change to conftest.py."""
    kinds = sorted({case.parent.name for case in CASES} - set(_BUILT_IN_KINDS))
    extra = "".join(f"  - {{name: {kind}, kind: {kind}, base_url: '{upstream.url}', retry: {{attempts: 1}}, "
                    "health: {max_failures: 0}}\n" for kind in kinds)
    return await make_gateway(extra_provider=extra)


def _case_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name.removesuffix('.upstream.sse')}"


# Providers whose streams carry no timestamp: `created` is the request's time, checked, then masked.
_STAMPED_BY_GATEWAY = ("anthropic", "gemini")
_CREATED = re.compile(rb'"created": ?(\d+)')


def _mask_created(body: bytes) -> bytes:
    for value in _CREATED.findall(body):
        assert abs(int(value) - time.time()) < 600, "created must be the request's unix time"
    return _CREATED.sub(b'"created":"<request time>"', body)


def _render(status: int, content_type: str, body: bytes, kind: str = "openai") -> bytes:
    if kind in _STAMPED_BY_GATEWAY:
        body = _mask_created(body)
    if content_type == "application/json":
        body = json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode() + b"\n"
    return f"HTTP {status} {content_type}\n\n".encode() + body


async def _exchange(case: Path, split: int | None, upstream, gateway) -> tuple[bytes, str]:
    """(what the client got, rendered; what the provider got, rendered) for one case."""
    stem = case.name.removesuffix(".upstream.sse")
    request_file = case.with_name(f"{stem}.request.json")
    request = json.loads(request_file.read_text()) if request_file.exists() else dict(DEFAULT_REQUEST)
    endpoint = request.pop("_endpoint", "chat")
    case_split = request.pop("_split", None)  # never sent: an OpenAI-compatible provider would get it
    split = (case_split or split) if split else None
    content_type = ADAPTERS[case.parent.name].content_type  # a format not framed as SSE is served as its own
    headers = {} if content_type == "text/event-stream" else {"headers": {"Content-Type": content_type}}
    upstream.stream(case.read_bytes(), split=split, **headers)

    path = "/v2/chat/completions" if endpoint == "chat" else "/v2/completions"
    response = await gateway.post(path, json=request)
    got = _render(response.status, response.content_type, await response.read(), case.parent.name)
    assert len(upstream.received) == 1
    return got, upstream_request(upstream.received[0])


@pytest.mark.parametrize("split", [None, 7], ids=["whole", "split7"])
@pytest.mark.parametrize("case", CASES, ids=_case_name)
async def test_golden(case: Path, split: int | None, upstream, gateway):
    got, sent = await _exchange(case, split, upstream, gateway)
    stem = case.name.removesuffix(".upstream.sse")
    expected_file = case.with_name(f"{stem}.client.http")
    sent_file = case.with_name(f"{stem}.upstream-request.json")
    if os.environ.get("GOLDEN_UPDATE") and split is None:
        expected_file.write_bytes(got)
        sent_file.write_text(sent)
    assert got.decode() == expected_file.read_text()
    assert sent == sent_file.read_text(), "the request sent upstream changed: GOLDEN_UPDATE=1 rewrites it"


async def test_golden_upstream_request_fails_on_a_change_in_request_conversion(upstream, gateway, monkeypatch):
    """A deliberate change in how a request is converted (Anthropic's version header, Gemini's generation
    config) makes the golden comparison fail: the .upstream-request.json files do pin conversion."""
    from gateway.providers import anthropic, gemini_request

    case = GOLDEN / "anthropic" / "text.upstream.sse"
    _, sent = await _exchange(case, None, upstream, gateway)
    assert sent == case.with_name("text.upstream-request.json").read_text()
    monkeypatch.setattr(anthropic, "API_VERSION", "2099-01-01")
    upstream.received.clear()
    _, sent = await _exchange(case, None, upstream, gateway)
    assert sent != case.with_name("text.upstream-request.json").read_text()

    case = GOLDEN / "gemini" / "max-tokens.upstream.sse"
    upstream.received.clear()
    monkeypatch.setattr(gemini_request, "max_output_tokens", lambda body: 7)
    _, sent = await _exchange(case, None, upstream, gateway)
    assert sent != case.with_name("max-tokens.upstream-request.json").read_text()
