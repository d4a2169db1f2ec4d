"""The per-request shortcuts say what the slower forms they replace said (gateway/metrics.py,
gateway/logsetup.py, gateway/redaction.py)."""

from __future__ import annotations

import logging
import math

import pytest
from hypothesis import given, strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.logsetup import TEXT_FORMAT, formatter
from gateway.metrics import Observe, increment
from gateway.redaction import _HEADER_WORDS, _SHAPE_WORDS, _may_hold_shape

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
