"""The rule compiler and the incremental scanner: pure, so checked directly and with hypothesis."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.moderation import RuleError, RuleSet, regex_rule, term_rule

TERMS = ("abca", "b-b", "cc")
# Every kind of rule the scanner treats differently: terms, bounded regexes with anchors and lookaround
# (in the shared alternation), a back-reference, max_chars rules with and without end-sensitive parts.
MIXED = RuleSet((
    term_rule(0, "abca", "redact", "<0>"),
    regex_rule(1, r"\bb-?b\b", "redact", "<1>"),
    regex_rule(2, r"a(?=cb)", "redact", "<2>"),
    regex_rule(3, r"(?<=1)c", "redact", "<3>"),
    regex_rule(4, r"([ab])\1\1", "redact", "<4>"),
    regex_rule(5, r"1.*1", "redact", "<5>", max_chars=6),
    regex_rule(6, r"c-+$", "redact", "<6>", max_chars=4),
    term_rule(7, "bcb", "block"),
))
TERMS_ONLY = RuleSet(tuple(term_rule(i, t, "redact", f"<{i}>") for i, t in enumerate(TERMS)))
ALPHABET = "abcABC1- \n"


def scan(rules: RuleSet, pieces: list[str]) -> tuple[str, int | None]:
    scanner = rules.scanner()
    out = [scanner.feed(piece) for piece in pieces]
    out.append(scanner.finish())
    return "".join(out), scanner.blocked.index if scanner.blocked else None


@st.composite
def text_and_split(draw, alphabet=ALPHABET):
    text = draw(st.text(alphabet, max_size=60))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in zip(bounds, bounds[1:])]


@settings(max_examples=400, deadline=None)
@given(text_and_split())
def test_any_split_gives_the_same_output_as_the_whole_text(case):
    text, pieces = case
    assert scan(MIXED, pieces) == scan(MIXED, [text])
    assert scan(TERMS_ONLY, pieces) == scan(TERMS_ONLY, [text])


def leftmost_reference(rules: list[tuple[str, str]], text: str) -> str:
    """Leftmost match of any pattern, ties to the first listed, replaced by its mask; scanning goes on after it."""
    compiled = [(re.compile(p, re.IGNORECASE), mask) for p, mask in rules]
    out, pos = [], 0
    while True:
        found = [(m.start(), i, m.end()) for i, (p, _) in enumerate(compiled) if (m := p.search(text, pos))]
        if not found:
            return "".join(out) + text[pos:]
        start, i, end = min(found)
        out += [text[pos:start], compiled[i][1]]
        pos = end


@settings(max_examples=300, deadline=None)
@given(text_and_split())
def test_bounded_rules_redact_exactly_the_leftmost_matches(case):
    text, pieces = case
    patterns = [("abca", "<0>"), (r"\bb-?b\b", "<1>"), (r"a(?=cb)", "<2>"), (r"(?<=1)c", "<3>"), ("cc", "<4>"),
                (r"b1$", "<5>"), (r"(?m:^c)", "<6>"), (r"[^a-c]1", "<7>")]
    rules = RuleSet(tuple(regex_rule(i, p, "redact", mask) for i, (p, mask) in enumerate(patterns)))
    assert rules.quick is not None  # all in the shared alternation: this checks the fast path too
    assert scan(rules, pieces)[0] == leftmost_reference(patterns, text)


@settings(max_examples=300, deadline=None)
@given(text_and_split(ALPHABET + "çÇ"))
def test_terms_and_regexes_together_redact_exactly_the_leftmost_matches(case):
    """Both ways of finding where a match may still begin (terms' beginnings, the others' partial matching)
    on one fast path, terms sharing beginnings with each other and with the regexes."""
    text, pieces = case
    patterns = [(re.escape("abca"), "<0>", "abca"), (r"\bb-?b\b", "<1>", None), (re.escape("açb"), "<2>", "açb"),
                (r"a(?=cb)", "<3>", None), (re.escape("cc"), "<4>", "cc"), (r"1[aç]", "<5>", None),
                (re.escape("abc1"), "<6>", "abc1")]
    rules = RuleSet(tuple(term_rule(i, term, "redact", mask) if term else regex_rule(i, p, "redact", mask)
                          for i, (p, mask, term) in enumerate(patterns)))
    assert rules.quick is not None and rules.term_starts is not None and rules.first_chars is not None
    assert scan(rules, pieces)[0] == leftmost_reference([(p, mask) for p, mask, _ in patterns], text)


@settings(max_examples=300, deadline=None)
@given(text_and_split())
def test_held_text_is_only_what_could_still_start_a_term(case):
    _, pieces = case
    scanner = TERMS_ONLY.scanner()
    seen = ""
    for piece in pieces:
        scanner.feed(piece)
        seen += piece
        held = seen[len(seen) - scanner.held:].lower()
        assert scanner.held < max(map(len, TERMS))
        assert held == "" or any(term.startswith(held) for term in TERMS)


def test_a_term_split_across_pieces_is_caught_and_the_rest_flows_at_once():
    rules = RuleSet((term_rule(0, "forbidden phrase", "redact"),))
    scanner = rules.scanner()
    assert scanner.feed("say the forb") == "say the "  # "forb" could begin the term: held
    assert scanner.feed("IDDEN Phrase now") == "*** now"
    assert scanner.feed(" and forge") == " and forge"  # "forge" cannot: released at once
    assert scanner.finish() == ""


def test_block_drops_the_match_and_everything_after_it():
    rules = RuleSet((term_rule(0, "secret", "block"),))
    scanner = rules.scanner()
    assert scanner.feed("the sec") == "the "
    assert scanner.feed("RET is out") == ""
    assert scanner.blocked is rules.rules[0]
    assert scanner.feed("more") == "" and scanner.finish() == ""


def test_held_text_that_never_completes_is_released_at_the_end():
    rules = RuleSet((regex_rule(0, r"\b\d{3}-\d{2}-\d{4}\b", "redact", "[redacted]"),))
    scanner = rules.scanner()
    assert scanner.feed("call 555-12-") == "call "
    assert scanner.finish() == "555-12-"
    scanner = rules.scanner()
    assert scanner.feed("ssn 123-45-6789") == "ssn "  # a digit more would undo the match: wait for the end
    assert scanner.finish() == "[redacted]"


def test_max_chars_bounds_a_match_and_the_held_text():
    rules = RuleSet((regex_rule(0, r"<.*>", "redact", max_chars=10),))
    scanner = rules.scanner()
    assert scanner.feed("a <b> c") == "a "  # "<b> c" could still grow into a longer match
    assert scanner.feed("d" * 20) == "*** c" + "d" * 20
    scanner = rules.scanner()
    assert scanner.feed("<" + "x" * 5) == ""
    assert scanner.feed("x" * 20) == "<" + "x" * 25  # no ">" within 10 characters of "<": no match there
    assert scanner.feed(">") == ">" and scanner.finish() == ""


def test_first_match_checks_a_whole_text():
    rules = RuleSet((term_rule(0, "alpha", "redact"), term_rule(1, "beta", "block")))
    assert rules.first_match("no match here") is None
    assert rules.first_match("it is BETA then alpha").index == 1
    assert rules.first_match("alpha beta").index == 0


@pytest.mark.parametrize("source, message", [
    (r"a.*b", "no upper bound"),
    (r"x+", "no upper bound"),
    (r"a(?=.*b)", "no upper bound"),
    (r"a*", "empty text"),
    (r"(", "not a valid regular expression"),
])
def test_bad_rules_are_refused(source, message):
    with pytest.raises(RuleError, match=message):
        regex_rule(0, source, "block")


def test_an_unbounded_regex_with_max_chars_is_accepted():
    rule = regex_rule(0, r"a.*b", "block", max_chars=50)
    assert rule.window == 50 and rule.windowed
