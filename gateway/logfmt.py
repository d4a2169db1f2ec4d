"""Client-controlled text on its way into a log line: one line, no terminal escapes, bounded length."""

from __future__ import annotations

import re

FIELD_CAP = 200  # characters of a client value kept in a log line (a model name, a request id, a path)

# C0 controls, DEL, C1 controls, the backslash that marks an escape, and what editors and terminals take
# for a line break or a change of direction (U+2028/2029, the bidi overrides and isolates).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: object, cap: int = FIELD_CAP) -> str:
    """`value` as text safe for one log line: control characters and backslashes escaped (`\\n`, `\\x1b`,
    `\\\\`), and at most `cap` characters of it kept, with how many more were cut."""
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - cap
    if cut > 0:
        text = text[:cap]
    text = _UNSAFE.sub(_escape_char, text)
    return f"{text}...[+{cut} chars]" if cut > 0 else text
