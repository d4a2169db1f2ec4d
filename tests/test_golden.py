"""Golden tests: an upstream stream file in, the exact client response out.

tests/golden/<kind>/<case>.upstream.sse   the bytes the fake provider sends
tests/golden/<kind>/<case>.request.json   the client's request (optional; `_endpoint`, `_split` steer the test)
tests/golden/<kind>/<case>.client.http    what the client must get: a status line, then the exact body

Each case runs with the upstream bytes written whole and cut into small reads: the client must see
the same bytes either way. `GOLDEN_UPDATE=1 pytest tests/test_golden.py` rewrites the .client.http
files; review their diff before committing.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.upstream.sse"))
DEFAULT_REQUEST = {"model": "up/gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


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


@pytest.mark.parametrize("split", [None, 7], ids=["whole", "split7"])
@pytest.mark.parametrize("case", CASES, ids=_case_name)
async def test_golden(case: Path, split: int | None, upstream, gateway):
    stem = case.name.removesuffix(".upstream.sse")
    request_file = case.with_name(f"{stem}.request.json")
    request = json.loads(request_file.read_text()) if request_file.exists() else dict(DEFAULT_REQUEST)
    endpoint = request.pop("_endpoint", "chat")
    split = request.pop("_split", split) if split else None
    upstream.stream(case.read_bytes(), split=split)

    path = "/v2/chat/completions" if endpoint == "chat" else "/v2/completions"
    response = await gateway.post(path, json=request)
    got = _render(response.status, response.content_type, await response.read(), case.parent.name)

    expected_file = case.with_name(f"{stem}.client.http")
    if os.environ.get("GOLDEN_UPDATE") and split is None:
        expected_file.write_bytes(got)
    assert got.decode() == expected_file.read_text()
    assert len(upstream.received) == 1
