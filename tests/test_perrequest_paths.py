"""The per-request shortcuts say what the slower forms they replace said (gateway/metrics.py,
gateway/logsetup.py, gateway/redaction.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import re
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway import logsetup
from gateway.logsetup import TEXT_FORMAT, LineWriter, TextFormatter, formatter, plain_text_handler
from gateway.metrics import Observe, increment
from gateway.redaction import _HEADER_WORDS, _SHAPE_WORDS, _install, _may_hold_shape, _uninstall, as_logged

BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0)


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=20))
def test_observe_fills_the_buckets_as_histogram_observe_does(amounts):
    theirs = Histogram("theirs", "h", buckets=BOUNDS, registry=CollectorRegistry())
    ours = Histogram("ours", "h", buckets=BOUNDS, registry=CollectorRegistry())
    observe = Observe(ours)
    for amount in amounts:
        theirs.observe(amount)
        observe(amount)
    def figures(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name.removeprefix("ours").removeprefix("theirs"), s.labels, s.value)
                for s in next(iter(histogram.collect())).samples if not s.name.endswith("_created")]

    assert figures(ours) == figures(theirs)


def test_increment_counts_as_inc_does():
    counter = Counter("things", "c", registry=CollectorRegistry())
    increment(counter)(3)
    assert counter._value.get() == 3


@pytest.mark.parametrize("word", _SHAPE_WORDS + _HEADER_WORDS + tuple(w.upper() for w in _HEADER_WORDS))
def test_every_shape_word_sends_a_line_to_the_regexes(word):
    assert _may_hold_shape(f"request id=1 model={word}x rest")


def test_a_plain_line_skips_the_regexes():
    assert not _may_hold_shape("request id=1 request_id=1 chat key=- provider=fake model=gpt-4o-mini")


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_text_lines_are_logging_s_own(created):
    record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.created, record.msecs = created, math.floor((created - int(created)) * 1000)
    assert formatter("text").format(record) == logging.Formatter(TEXT_FORMAT).format(record)


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.sampled_from([logging.DEBUG, logging.INFO]),
       st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_a_line_written_without_a_record_is_the_record_s_line(created, level, message):
    record = logging.LogRecord("gateway.access", level, __file__, 0, message, (), None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0  # as LogRecord sets them
    assert TextFormatter().line(created, record.levelname, "gateway.access", message) == \
        logging.Formatter(TEXT_FORMAT).format(record)


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def configured() -> Iterator[LineWriter]:
    """`gateway serve`'s logging, put back as it was afterwards (pytest's own capture included)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logsetup._Setup.handler, logsetup._Setup.pinned_level)
    logsetup.configure("INFO")
    handler = logsetup._Setup.handler
    assert handler is not None
    handler.setStream(Writes())
    try:
        yield handler
    finally:
        for added in list(root.handlers):
            root.removeHandler(added)
        for old in saved[0]:
            root.addHandler(old)
        root.setLevel(saved[1])
        logsetup._Setup.handler, logsetup._Setup.pinned_level = saved[2], saved[3]


@contextlib.contextmanager
def alone(handler: logging.Handler) -> Iterator[None]:
    """Without pytest's capture handlers, which it adds to the root logger around each test."""
    root = logging.getLogger()
    others = [other for other in root.handlers if other is not handler]
    for other in others:
        root.removeHandler(other)
    try:
        yield
    finally:
        for other in others:
            root.addHandler(other)


def test_the_access_logger_s_lines_go_straight_to_the_configured_handler_only_when_nothing_else_sees_them(
        configured):
    access = logging.getLogger("gateway.access")
    assert plain_text_handler(access, logging.INFO) is None  # pytest's capture sees every record
    with alone(configured):
        _declines_whenever_another_would_see_the_record(access, configured)


def _declines_whenever_another_would_see_the_record(access: logging.Logger, configured: LineWriter) -> None:
    assert plain_text_handler(access, logging.INFO) == (configured, configured.formatter)
    root = logging.getLogger()
    other = logging.NullHandler()
    for logger in (root, logging.getLogger("gateway"), access):  # a capture or a handler anywhere on the way
        logger.addHandler(other)
        assert plain_text_handler(access, logging.INFO) is None
        logger.removeHandler(other)
    access.addFilter(lambda record: False)
    assert plain_text_handler(access, logging.INFO) is None
    access.filters.clear()
    access.propagate = False
    try:
        assert plain_text_handler(access, logging.INFO) is None
    finally:
        access.propagate = True
    configured.setFormatter(formatter("json"))
    assert plain_text_handler(access, logging.INFO) is None
    configured.setFormatter(formatter("text"))
    configured.setLevel(logging.WARNING)
    assert plain_text_handler(access, logging.INFO) is None


async def test_lines_made_in_one_loop_turn_leave_together_after_it(configured):
    stream = configured.stream
    log = logging.getLogger("gateway.test")
    for i in range(3):
        log.info("line %d", i)
    assert stream.writes == []  # nothing before the turn ends
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(stream.writes) == 1 and stream.writes[0].count("\n") == 3
    assert [line.rsplit(": ", 1)[1] for line in stream.writes[0].splitlines()] == ["line 0", "line 1", "line 2"]
    log.info("waits")
    thread = threading.Thread(target=log.info, args=("from a thread",))
    thread.start()
    thread.join()
    lines = "".join(stream.writes[1:]).splitlines()  # the thread's line after the one that waited
    assert [line.rsplit(": ", 1)[1] for line in lines] == ["waits", "from a thread"]


def test_a_flush_due_on_a_loop_that_stopped_first_does_not_hold_the_next_loop_s_lines(configured):
    log = logging.getLogger("gateway.test")

    async def log_and_stop() -> None:
        log.info("last of a loop")
        asyncio.get_running_loop().stop()  # before the turn that would write it

    first = asyncio.new_event_loop()
    first.create_task(log_and_stop())
    first.run_forever()
    first.close()
    assert configured.stream.writes == []  # it waits, as it would for a turn

    async def log_and_turn() -> None:
        log.info("first of the next")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(log_and_turn())
    assert [line.rsplit(": ", 1)[1] for line in "".join(configured.stream.writes).splitlines()] == [
        "last of a loop", "first of the next"]


def test_with_no_loop_running_a_line_is_written_at_once(configured):
    logging.getLogger("gateway.test").warning("now")
    assert len(configured.stream.writes) == 1 and configured.stream.writes[0].endswith("WARNING gateway.test: now\n")


def test_a_line_written_without_a_record_is_redacted_as_the_record_factory_would():
    secret = "configured-secret-value-0123456789"
    assert as_logged(f"model={secret}") == f"model={secret}"  # logging's own factory: as it is
    number = _install((secret,))
    try:
        assert secret not in (as_logged(f"model={secret}") or secret)
        theirs = logging.getLogRecordFactory()
        logging.setLogRecordFactory(lambda *args, **kwargs: theirs(*args, **kwargs))
        try:
            assert as_logged(f"model={secret}") is None  # another factory: the line takes the record's way
        finally:
            logging.setLogRecordFactory(theirs)
    finally:
        _uninstall(number)
    logging.setLogRecordFactory(lambda *args, **kwargs: logging.LogRecord(*args, **kwargs))
    try:
        number = _install((secret,))  # ours on top of another's: that one's work would still be skipped
        try:
            assert as_logged(f"model={secret}") is None
        finally:
            _uninstall(number)
    finally:
        logging.setLogRecordFactory(logging.LogRecord)


def test_an_access_line_written_straight_is_the_line_its_record_would_print(configured):
    from gateway.access_log import AccessRecord, finish

    def finished() -> AccessRecord:
        record = AccessRecord(own_id="a" * 32, request_id="b" * 32, client="127.0.0.1", method="POST",
                              path="/v1/chat/completions", started=0.0)
        record.status, record.requested_model = 200, "up/model \u2028 x"
        finish({}, record)  # type: ignore[arg-type]  # an app without metrics
        return record

    with alone(configured):
        finished()
    straight = configured.stream.getvalue()
    capture = Writes()
    through_logging = logging.StreamHandler(capture)
    through_logging.setFormatter(formatter("text"))
    logging.getLogger().addHandler(through_logging)  # another handler: lines take the record's way
    try:
        finished()
    finally:
        logging.getLogger().removeHandler(through_logging)
    configured.flush()
    def without_time(text: str) -> str:  # the date, the time and the request's seconds differ, the rest may not
        return re.sub(r" seconds=\S+", "", text.split(" ", 2)[2])

    assert straight.count("\n") == 1 and without_time(straight) == without_time(capture.getvalue())
    assert "requested_model=up/model \\u2028 x" in straight
