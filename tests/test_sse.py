"""The incremental SSE decoder: line ends, reads split anywhere, comments, fields, size caps, recordings."""

from __future__ import annotations

import asyncio
import os
import random
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.sse import SSEDecodeError, SSEDecoder, SSEEvent

RECORDINGS = Path(__file__).resolve().parents[2] / "shared" / "recordings"


# ---------------------------------------------------------------------------------------------- helpers


def decode_whole(data: bytes, **kwargs) -> list[SSEEvent]:
    return SSEDecoder(**kwargs).feed(data)


def decode_reads(reads, **kwargs) -> list[SSEEvent]:
    decoder = SSEDecoder(**kwargs)
    events: list[SSEEvent] = []
    for read in reads:
        events.extend(decoder.feed(read))
    return events


def split_at(data: bytes, cuts) -> list[bytes]:
    """`data` cut at the given offsets (sorted, deduplicated, 0 and len excluded): non-empty reads."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


def ev(data: bytes | str, event: str | None = None, id: str | None = None) -> SSEEvent:
    return SSEEvent(data.encode() if isinstance(data, str) else data, event, id)


# ---------------------------------------------------------------------------------------------- line ends


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_ends(nl):
    stream = b"data: one" + nl + nl + b"event: e" + nl + b"data: two" + nl + nl
    expected = [ev("one"), ev("two", "e")]
    assert decode_whole(stream) == expected
    assert decode_reads(bytewise(stream)) == expected


def test_mixed_line_ends():
    stream = b"data: a\r\n\ndata: b\n\r\ndata: c\r\rdata: d\r\n\rdata: e\n\r"
    expected = [ev("a"), ev("b"), ev("c"), ev("d"), ev("e")]
    assert decode_whole(stream) == expected
    assert decode_reads(bytewise(stream)) == expected


def test_crlf_split_between_reads_is_one_line_end():
    decoder = SSEDecoder()
    # "data: a\r\ndata: b\r\n\r\n": if the CR ending the first read and the LF starting the second were
    # two line ends, the blank line between them would dispatch "a" alone.
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [ev("a\nb")]
    assert decoder.feed(b"\n") == []  # the LF belongs to the CR before it: no second blank line
    assert decoder.feed(b"data: c\n\n") == [ev("c")]


def test_cr_at_end_of_read_then_real_blank_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [ev("a")]  # CR CR: the second CR is the blank line


def test_cr_then_lf_after_an_empty_read():
    """An empty read carries no bytes: it must not make the CR of the previous read forget its LF."""
    decoder = SSEDecoder()
    events = decoder.feed(b"data: a\r")
    events += decoder.feed(b"")
    events += decoder.feed(b"\ndata: b\r\n\r\n")
    assert events == [ev("a\nb")]


# ---------------------------------------------------------------------------------------------- fields


def test_comments_are_ignored():
    stream = b": keep-alive\n\ndata: x\n: inside an event\ndata: y\n\n:\n\n: OPENROUTER PROCESSING\n\n"
    assert decode_whole(stream) == [ev("x\ny")]


def test_multiline_data_joined_with_lf():
    assert decode_whole(b"data: a\ndata: b\ndata:\ndata: c\n\n") == [ev("a\nb\n\nc")]


def test_data_leading_space_only_one_stripped():
    stream = b"data:nospace\n\ndata: one\n\ndata:  two\n\ndata:\t tab\n\ndata:\n\ndata: \n\n"
    assert decode_whole(stream) == [ev("nospace"), ev("one"), ev(" two"), ev("\t tab"), ev(""), ev("")]


def test_data_field_without_colon_is_an_empty_data_line():
    assert decode_whole(b"data\n\ndata: a\ndata\n\n") == [ev(""), ev("a\n")]


def test_event_name_kept_then_reset_after_dispatch():
    stream = b"event: first\ndata: 1\n\ndata: 2\n\nevent:second\ndata: 3\n\nevent:  spaced\ndata: 4\n\n"
    assert decode_whole(stream) == [ev("1", "first"), ev("2"), ev("3", "second"), ev("4", " spaced")]


def test_event_without_data_is_not_dispatched_and_its_name_is_dropped():
    stream = b"event: ping\n\nevent: lonely\n: comment\n\ndata: x\n\n"
    assert decode_whole(stream) == [ev("x")]


def test_unknown_fields_and_retry_are_ignored():
    stream = b"retry: 1000\nfoo: bar\nx\ndata: ok\n\n"
    assert decode_whole(stream) == [ev("ok")]


def test_id_field_persists_and_nul_is_ignored():
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0\ndata: c\n\nid:\ndata: d\n\n"
    assert decode_whole(stream) == [ev("a", id="1"), ev("b", id="1"), ev("c", id="1"), ev("d", id="")]


def test_trailing_event_without_blank_line_is_not_dispatched():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n\ndata: 2\n") == [ev("1")]
    assert decoder.feed(b"data: 3") == []


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_multibyte_utf8_split_across_reads(nl):
    text = "héllo €uro 𝄞 clef 日本語 🙂"
    stream = ("event: név€\n" "data: " + text + "\n\n").replace("\n", nl.decode()).encode("utf-8")
    expected = [ev(text, "név€")]
    assert decode_whole(stream) == expected
    for cut in range(1, len(stream)):
        assert decode_reads([stream[:cut], stream[cut:]]) == expected, cut
    assert decode_reads(bytewise(stream)) == expected
    assert decode_reads(bytewise(stream))[0].data.decode("utf-8") == text


# ---------------------------------------------------------------------------------------------- size cap


def test_long_line_fed_at_once_raises():
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEDecodeError):
        decoder.feed(b"data: " + b"x" * 200 + b"\n\n")


def test_long_unterminated_line_fed_at_once_raises():
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEDecodeError):
        decoder.feed(b"data: " + b"x" * 200)


def test_long_line_after_partial_raises():
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 50)
    with pytest.raises(SSEDecodeError):
        decoder.feed(b"x" * 60 + b"\n\n")


@pytest.mark.parametrize("step", [1, 7, 33])
def test_line_growing_across_small_reads_raises_with_bounded_buffer(step):
    cap = 256
    decoder = SSEDecoder(max_event_bytes=cap)
    decoder.feed(b"data: ")
    fed = 6
    with pytest.raises(SSEDecodeError):
        while fed < 100 * cap:  # without the cap this loop ends without raising
            decoder.feed(b"y" * step)
            fed += step
            assert len(decoder._partial) <= cap
    assert fed <= cap + step


def test_event_made_of_many_short_lines_over_the_cap_raises():
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEDecodeError):
        for _ in range(100):
            decoder.feed(b"data: 0123456789\n")


def test_line_at_the_cap_is_accepted():
    cap = 100
    line = b"data: " + b"z" * (cap - 6)
    assert len(line) == cap
    stream = line + b"\n\n"
    assert decode_whole(stream, max_event_bytes=cap) == [ev(b"z" * (cap - 6))]
    assert decode_reads(bytewise(stream), max_event_bytes=cap) == [ev(b"z" * (cap - 6))]


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_one_byte_over_the_cap_raises(nl):
    cap = 100
    stream = b"data: " + b"z" * (cap - 5) + nl + nl
    with pytest.raises(SSEDecodeError):
        decode_whole(stream, max_event_bytes=cap)
    with pytest.raises(SSEDecodeError):
        decode_reads(bytewise(stream), max_event_bytes=cap)


@settings(max_examples=200, deadline=None)
@example(length=100, nl=b"\r\n", cuts=[50])
@example(length=101, nl=b"\n", cuts=[])
@example(length=101, nl=b"\r", cuts=[3, 101])
@given(
    length=st.integers(80, 120),
    nl=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(0, 130), max_size=12),
)
def test_cap_verdict_does_not_depend_on_the_split(length, nl, cuts):
    stream = b"data: ok" + nl + nl + b"data: " + b"w" * (length - 6) + nl + nl

    def outcome(reads):
        try:
            return decode_reads(reads, max_event_bytes=100)
        except SSEDecodeError:
            return "error"

    whole = outcome([stream])
    assert whole == ("error" if length > 100 else [ev("ok"), ev(b"w" * (length - 6))])
    assert outcome(split_at(stream, cuts)) == whole


# ---------------------------------------------------------------------------------------------- properties

_NO_NL = st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))
_line_text = st.text(alphabet=_NO_NL, max_size=12) | st.sampled_from(["", " ", "  lead", "é€𝄞🙂", "a:b", "[DONE]"])
_name = st.text(alphabet=st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=8)

_block = st.fixed_dictionaries({
    "event": st.none() | _name,
    "id": st.none() | _name,
    "data": st.lists(st.tuples(_line_text, st.booleans()), max_size=4),  # (text, with space after colon)
    "comments": st.lists(st.tuples(st.integers(0, 6), _line_text), max_size=2),
})


def _lines_of(block: dict) -> list[str]:
    lines: list[str] = []
    if block["event"] is not None:
        lines.append("event: " + block["event"])
    if block["id"] is not None and block["data"]:
        lines.append("id: " + block["id"])
    for text, space in block["data"]:
        lines.append(("data: " if space or text.startswith(" ") else "data:") + text)
    for position, text in block["comments"]:
        lines.insert(min(position, len(lines)), ":" + text)
    return lines


def _expected(blocks: list[dict]) -> list[SSEEvent]:
    events, last_id = [], None
    for block in blocks:
        if not block["data"]:
            continue
        if block["id"] is not None:
            last_id = block["id"]
        data = "\n".join(text for text, _ in block["data"]).encode("utf-8")
        events.append(SSEEvent(data, block["event"], last_id))
    return events


def _encode(blocks: list[dict], terminators) -> bytes:
    """Each line then its terminator; `terminators` gives the terminator of each line, blank ones included."""
    out: list[str] = []
    previous = ""
    for block in blocks:
        for line in [*_lines_of(block), ""]:
            nl = terminators()
            if previous == "\r" and line == "" and nl == "\n":
                nl = "\r\n"  # CR then a bare LF would read as one CRLF: that stream cannot say this
            out.append(line + nl)
            previous = nl
    return "".join(out).encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(
    blocks=st.lists(_block, max_size=8),
    mode=st.sampled_from(["\n", "\r\n", "\r", "mixed"]),
    data=st.data(),
)
def test_any_split_gives_the_source_events(blocks, mode, data):
    if mode == "mixed":
        terminators = lambda: data.draw(st.sampled_from(["\n", "\r\n", "\r"]))  # noqa: E731
    else:
        terminators = lambda: mode  # noqa: E731
    stream = _encode(blocks, terminators)
    cuts = data.draw(st.lists(st.integers(0, max(len(stream), 0)), max_size=20))
    expected = _expected(blocks)
    whole = decode_whole(stream)
    assert whole == expected
    assert decode_reads(split_at(stream, cuts)) == whole


_content = st.text(max_size=10)
_openai_chunk = st.fixed_dictionaries({
    "id": st.just("chatcmpl-C2P2HtMJhPkWjQ2adKerkdVilXmRL"),
    "object": st.just("chat.completion.chunk"),
    "created": st.integers(0, 2**31),
    "model": st.sampled_from(["gpt-4o-mini", "gpt-4o-2024-08-06", "deepseek-reasoner"]),
    "choices": st.lists(st.fixed_dictionaries({
        "index": st.integers(0, 3),
        "delta": st.fixed_dictionaries({}, optional={"role": st.just("assistant"), "content": _content,
                                                     "reasoning_content": _content}),
        "logprobs": st.none(),
        "finish_reason": st.none() | st.sampled_from(["stop", "length", "tool_calls"]),
    }), max_size=2),
}, optional={"usage": st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9999),
                                             "completion_tokens": st.integers(0, 9999)})})


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(_openai_chunk, min_size=1, max_size=8),
    nl=st.sampled_from([b"\n", b"\r\n"]),
    keepalive=st.booleans(),
    space=st.booleans(),
    data=st.data(),
)
def test_any_split_of_openai_streams(chunks, nl, keepalive, space, data):
    prefix = b"data: " if space else b"data:"
    parts = []
    for chunk in chunks:
        if keepalive:
            parts.append(b": keep-alive" + nl + nl)
        parts.append(prefix + orjson.dumps(chunk) + nl + nl)
    parts.append(prefix + b"[DONE]" + nl + nl)
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    whole = decode_whole(stream)
    assert [orjson.loads(e.data) for e in whole[:-1]] == chunks
    assert whole[-1] == ev("[DONE]")
    assert all(e.event is None for e in whole)
    assert decode_reads(split_at(stream, cuts)) == whole


# ---------------------------------------------------------------------------------------------- recordings


def _recordings() -> list[Path]:
    if not RECORDINGS.is_dir():
        return []
    return sorted(RECORDINGS.rglob("*.sse"))


def _require_recordings() -> None:
    if not RECORDINGS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{RECORDINGS} is missing on CI")
        pytest.skip(f"{RECORDINGS} not present")


def test_recordings_folder_present_and_not_empty():
    _require_recordings()
    files = _recordings()
    assert files, f"no *.sse files under {RECORDINGS}"
    assert any(f.relative_to(RECORDINGS).parts[0] == "openai" for f in files)


@pytest.mark.parametrize(
    "path", _recordings() or [None],
    ids=lambda p: str(p.relative_to(RECORDINGS)) if p is not None else "no-recordings",
)
def test_recording_decodes_the_same_at_any_split(path):
    _require_recordings()
    if path is None:
        pytest.fail(f"{RECORDINGS} exists but holds no *.sse file")
    body = path.read_bytes()
    whole = decode_whole(body)
    assert whole, f"{path} decoded to no events"
    rng = random.Random(zlib.crc32(str(path.relative_to(RECORDINGS)).encode()))
    for _ in range(25):
        cuts = rng.sample(range(1, len(body)), k=min(len(body) - 1, rng.randint(1, 40)))
        assert decode_reads(split_at(body, cuts)) == whole
    assert decode_reads(bytewise(body)) == whole
    top = path.relative_to(RECORDINGS).parts[0]
    if top in ("openai", "openai-compatible"):
        for event in whole:
            if event.data != b"[DONE]":
                orjson.loads(event.data)  # raises on anything that is not JSON
