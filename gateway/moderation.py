"""Moderation rules and the incremental scanner that applies them to text arriving in pieces.

Pure: no I/O. Rules are compiled once, at config load. The scanner's answer never depends on how the
text was split: a match at a position is decided from a bounded window of text after it (the rule's
`window`), and is acted on only once that window has arrived (or the text has ended). Text that cannot
start a match is released at once; the rest is held, so at most `window - 1` characters wait.

Semantics, for the whole text as for any split of it: from left to right, the leftmost match of any rule
wins (ties go to the rule listed first); a `redact` match is replaced by its mask and scanning goes on
after it; a `block` match ends the text just before it. A rule matches at a position only within its
window from there: for a bounded regex that is its longest match plus what it looks ahead at, so the
window changes nothing; a rule with `max_chars` matches only within `max_chars` characters.

Rules use Python `re` syntax, always case-insensitive; they are run by the `regex` module, whose
partial matching tells exactly whether held text could still start a match (for a term, a stdlib `re`
of its beginnings tells the same, faster).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
# The stdlib's own regex parser, which typeshed does not describe.
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import regex

ACTIONS = ("redact", "block")
DEFAULT_MASK = "***"
_FLAGS = regex.IGNORECASE | regex.VERSION0
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT))


class RuleError(ValueError):
    """A rule that cannot be compiled; the message is shown with the rule's place in the config."""


@dataclass(frozen=True)
class Rule:
    index: int  # its place in the config, named in logs (never its text)
    pattern: regex.Pattern[str]
    action: str  # "redact" or "block"
    mask: str
    window: int  # a match starting at s is decided by text[s : s + window]
    behind: int  # characters before a match the pattern may look at (\b, lookbehind)
    windowed: bool  # max_chars given: a match found without the window must be checked within it
    each_position: bool  # windowed and looks at the end of its text ($, \b, lookahead): no search shortcut
    backrefs: bool  # cannot join the other rules' alternation (group numbers would shift)
    term: str | None = None  # a term rule's text: what may still begin it is known without partial matching


def term_rule(index: int, term: str, action: str, mask: str = DEFAULT_MASK) -> Rule:
    pattern = regex.compile(regex.escape(term), _FLAGS)
    return Rule(index, pattern, action, mask, len(term), 0, False, False, False, term)


def regex_rule(index: int, source: str, action: str, mask: str = DEFAULT_MASK, max_chars: int | None = None) -> Rule:
    try:
        tree = sre_parse.parse(source)
    except re.error as exc:
        raise RuleError(f"not a valid regular expression: {exc}") from None
    try:
        pattern = regex.compile(source, _FLAGS)
    except regex.error as exc:
        raise RuleError(f"not a valid regular expression: {exc}") from None
    shortest, longest = tree.getwidth()
    if shortest == 0:
        raise RuleError("the regular expression can match empty text")
    shape = _Shape()
    shape.walk(tree)
    unbounded = longest >= sre.MAXREPEAT or shape.ahead >= sre.MAXREPEAT
    if max_chars is None:
        if unbounded:
            raise RuleError("the regular expression's matches have no upper bound in length: "
                            "give the rule a max_chars")
        window = longest + shape.ahead
    else:
        if max_chars < shortest:
            raise RuleError(f"max_chars is shorter than the shortest match ({shortest} characters)")
        window = max_chars
    windowed = max_chars is not None
    return Rule(index, pattern, action, mask, window, min(shape.behind, sre.MAXREPEAT), windowed,
                windowed and shape.ahead > 0, shape.backrefs)


# How many characters past its position (or before it) a zero-width anchor may read; `$` also
# matches before a last "\n", so it may read two.
_AT_AHEAD = {sre.AT_BOUNDARY: 1, sre.AT_NON_BOUNDARY: 1, sre.AT_END: 2, sre.AT_END_LINE: 1, sre.AT_END_STRING: 1}
_AT_BEHIND = {sre.AT_BOUNDARY: 1, sre.AT_NON_BOUNDARY: 1, sre.AT_BEGINNING: 1, sre.AT_BEGINNING_LINE: 1,
              sre.AT_BEGINNING_STRING: 1}


class _Shape:
    """How far beyond its own text a pattern looks (conservatively), and whether it refers back to groups."""

    def __init__(self) -> None:
        self.ahead = 0
        self.behind = 0
        self.backrefs = False

    def walk(self, tree: Any) -> None:
        for op, av in tree.data if hasattr(tree, "data") else tree:
            if op in (sre.ASSERT, sre.ASSERT_NOT):
                direction, inner = av
                width = inner.getwidth()[1]
                if direction == 1:
                    self.ahead += width
                else:
                    self.behind += width
                self.walk(inner)
            elif op is sre.AT:
                self.ahead += _AT_AHEAD.get(av, 0)
                self.behind += _AT_BEHIND.get(av, 0)
            elif op is sre.BRANCH:
                for branch in av[1]:
                    self.walk(branch)
            elif op is sre.SUBPATTERN:
                self.walk(av[3])
            elif op in _REPEATS:
                self.walk(av[2])
            elif op is getattr(sre, "ATOMIC_GROUP", None):
                self.walk(av)
            elif op is sre.GROUPREF:
                self.backrefs = True
            elif op is sre.GROUPREF_EXISTS:
                self.backrefs = True
                self.walk(av[1])
                if av[2] is not None:
                    self.walk(av[2])


_CATEGORIES = {sre.CATEGORY_DIGIT: r"\d", sre.CATEGORY_NOT_DIGIT: r"\D", sre.CATEGORY_SPACE: r"\s",
               sre.CATEGORY_NOT_SPACE: r"\S", sre.CATEGORY_WORD: r"\w", sre.CATEGORY_NOT_WORD: r"\W"}


def _first_chars(trees: list[Any]) -> set[str] | None:
    """Character-class pieces covering every character a match of these patterns can begin with, or None
    when that is not simply known (then any character may begin one)."""
    out: set[str] = set()
    for tree in trees:
        if not _firsts(list(tree), out):
            return None
    return out


def _firsts(items: list[Any], out: set[str]) -> bool:
    """Adds the first characters of the sequence to `out`; False when unknown. A sequence that can match
    empty text needs what follows it, which the caller cannot give here: that is unknown too."""
    for op, av in items:
        if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            continue  # zero width: the first character comes from what follows
        if op is sre.LITERAL:
            out.add(f"\\U{av:08x}")
            return True
        if op is sre.IN:
            for kind, value in av:
                if kind is sre.LITERAL:
                    out.add(f"\\U{value:08x}")
                elif kind is sre.RANGE:
                    out.add(f"\\U{value[0]:08x}-\\U{value[1]:08x}")
                elif kind is sre.CATEGORY and value in _CATEGORIES:
                    out.add(_CATEGORIES[value])
                else:
                    return False
            return True
        if op is sre.SUBPATTERN:
            inner = av[3]
        elif op in _REPEATS and av[0] >= 1:
            inner = av[2]
        elif op is sre.BRANCH:
            if any(branch.getwidth()[0] == 0 or not _firsts(list(branch), out) for branch in av[1]):
                return False
            return True
        else:
            return False
        if inner.getwidth()[0] == 0:
            return False
        return _firsts(list(inner), out)
    return False


def _beginnings(term: str) -> str:
    """A pattern matching any proper beginning of the term ('forb' of 'forbidden')."""
    pattern = ""
    for char in reversed(term[:-1]):
        pattern = f"{re.escape(char)}(?:{pattern})?" if pattern else re.escape(char)
    return f"(?:{pattern})"


class RuleSet:
    """Compiled rules plus what the scanner's fast path needs."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.context = max([1, *(r.behind for r in rules)])  # released characters kept for look-behind and ^
        # Rules a plain search decides can share one alternation: one search per piece of text when none
        # of them can match there, which is nearly always.
        plain = [r for r in rules if not (r.windowed or r.backrefs)]
        self.quick: re.Pattern[str] | None = None  # the alternation in stdlib `re`: several times faster
        # Where a match may still begin in the tail: for terms, a stdlib `re` of their beginnings that run to
        # the text's end; for the other rules, a character they can begin with, then the `regex` module's
        # (slower) partial matching from there.
        self.term_starts: re.Pattern[str] | None = None
        self.first_chars: re.Pattern[str] | None = None
        self.prefilter: regex.Pattern[str] | None = None
        self.plain_window = max((r.window for r in plain), default=0)
        if plain:
            alternation = "|".join(f"(?:{r.pattern.pattern})" for r in plain)
            try:
                self.quick = re.compile(alternation, re.IGNORECASE)
                others = [r for r in plain if r.term is None]
                if others:
                    self.prefilter = regex.compile("|".join(f"(?:{r.pattern.pattern})" for r in others), _FLAGS)
            except (regex.error, re.error):  # e.g. a rule's inline global flag: each rule is searched alone
                self.quick = self.prefilter = None
                plain = []
            else:
                beginnings = [_beginnings(r.term) for r in plain if r.term is not None and len(r.term) > 1]
                if beginnings:
                    self.term_starts = re.compile(f"(?:{'|'.join(beginnings)})\\Z", re.IGNORECASE)
                if others:
                    starts = _first_chars([sre_parse.parse(r.pattern.pattern) for r in others])
                    first = f"[{''.join(sorted(starts))}]" if starts is not None else "(?s:.)"
                    self.first_chars = re.compile(first, re.IGNORECASE)
        self.separate = tuple(r for r in rules if r not in plain)  # rules the prefilter does not cover
        if self.separate:
            self.quick = None  # the fast path is for when the alternation covers every rule

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scanner(self) -> Scanner:
        return Scanner(self)

    def first_match(self, text: str) -> Rule | None:
        """The first rule that matches anywhere in a complete text (the request check)."""
        scanner = Scanner(self)
        scanner.feed(text)
        scanner.finish()
        return scanner.matched


class Scanner:
    """One stream of text (a choice's content, its reasoning, one tool call's arguments).

    `feed` returns what may be released now; `finish` what remains once the text has ended. After a
    `block` match, `blocked` is that rule and everything from the match on is dropped.
    """

    __slots__ = ("_set", "_buf", "_pos", "blocked", "matched", "redactions")

    def __init__(self, rule_set: RuleSet) -> None:
        self._set = rule_set
        self._buf = ""  # the original text from a little before the held part (look-behind context) on
        self._pos = 0  # where the held (not yet released) text begins in _buf
        self.blocked: Rule | None = None
        self.matched: Rule | None = None  # the first rule that matched, either action
        self.redactions = 0  # matches replaced by their mask (for the access log and metrics)

    @property
    def held(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, text: str) -> str:
        if self.blocked is not None:
            return ""
        buf = self._buf + text if self._buf else text
        rule_set = self._set
        pos = self._pos
        if rule_set.quick is not None and rule_set.quick.search(buf, pos) is None:
            # The fast path, nearly always: no rule matches from pos. A match may still begin only in the
            # last `window - 1` characters (its window has not all arrived), at a character it can begin with.
            end = len(buf)
            tail = end - rule_set.plain_window + 1
            held_from = tail if tail > pos else pos
            release = end
            if rule_set.term_starts is not None:
                begun = rule_set.term_starts.search(buf, held_from)
                if begun is not None:
                    release = begun.start()
            if rule_set.first_chars is not None:
                first = rule_set.first_chars.search(buf, held_from, release)
                if first is not None:
                    assert rule_set.prefilter is not None  # set with first_chars
                    maybe = rule_set.prefilter.search(buf, first.start(), partial=True)
                    assert maybe is not None  # a match may begin at first, so a partial one is found there
                    if not maybe.partial:
                        release = -1  # a whole match after all
                    elif maybe.start() < release:
                        release = maybe.start()
            if release >= 0:
                cut = release - rule_set.context
                if cut > 0:
                    self._buf, self._pos = buf[cut:], release - cut
                else:
                    self._buf, self._pos = buf, release
                return buf[pos:release]
        return self._scan(buf, False)

    def finish(self) -> str:
        """Ends the text: decides what was held. The scanner starts afresh for any later text."""
        if self.blocked is not None:
            return ""
        out = self._scan(self._buf, True)
        self._buf, self._pos = "", 0
        return out

    def _scan(self, buf: str, final: bool) -> str:
        rule_set = self._set
        pos = self._pos
        end = len(buf)
        if final and rule_set.quick is not None and rule_set.quick.search(buf, pos) is None:
            self._keep(buf, end)
            return buf[pos:]
        pieces = []
        while True:
            event = self._next(buf, pos, final)
            if event is None:
                release = end
                break
            start, stop, rule = event
            if rule is None:  # text from `start` could still begin a match: hold it
                release = start
                break
            pieces.append(buf[pos:start])
            if self.matched is None:
                self.matched = rule
            if rule.action == "block":
                self.blocked = rule
                self._buf, self._pos = "", 0
                return "".join(pieces)
            pieces.append(rule.mask)
            self.redactions += 1
            pos = stop
        pieces.append(buf[pos:release])
        self._keep(buf, release)
        return "".join(pieces)

    def _keep(self, buf: str, release: int) -> None:
        cut = release - self._set.context
        if cut > 0:
            self._buf, self._pos = buf[cut:], release - cut
        else:
            self._buf, self._pos = buf, release

    def _next(self, buf: str, pos: int, final: bool) -> tuple[int, int, Rule | None] | None:
        """The leftmost event from pos: (start, end, rule) for a decided match, (start, start, None) for
        the first place a match may still begin, or None when nothing can."""
        best: tuple[int, int, Rule | None] | None = None
        for rule in self._set.rules:
            event = _rule_event(rule, buf, pos, final, best[0] if best is not None else len(buf) + 1)
            if event is not None and (best is None or event[0] < best[0]):
                best = event
        return best


def _rule_event(rule: Rule, buf: str, pos: int, final: bool, before: int) -> tuple[int, int, Rule | None] | None:
    """The rule's first event from pos that starts before `before`, else None."""
    end = len(buf)
    pattern = rule.pattern
    window = rule.window
    decided = end if final else end - window  # a match at s <= decided is settled: its window has arrived
    last = min(decided, before - 1)
    if rule.each_position:
        for start in range(pos, last + 1):
            found = pattern.match(buf, start, min(start + window, end))
            if found is not None:
                return start, found.end(), rule
    else:
        start = pos
        while start <= last:
            found = pattern.search(buf, start)
            if found is None or found.start() > last:
                break
            start = found.start()
            if rule.windowed:
                found = pattern.match(buf, start, min(start + window, end))
            if found is not None:
                return start, found.end(), rule
            start += 1
    if final:
        return None
    tail = max(pos, decided + 1)
    if tail >= before:
        return None
    maybe = pattern.search(buf, tail, partial=True)
    if maybe is not None and not maybe.partial:  # a full match hides partial ones before it: try each place
        for start in range(tail, maybe.start()):
            if pattern.match(buf, start, partial=True) is not None:
                return (start, start, None) if start < before else None
    if maybe is None or maybe.start() >= min(end, before):
        return None
    return maybe.start(), maybe.start(), None
