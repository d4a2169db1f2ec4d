"""Vertex's `streamFunctionCallArguments` mode: a function call's arguments arrive in pieces, each a
value at a JSON path (`partialArgs: [{"jsonPath": "$.city", "stringValue": "Par", "willContinue": true}]`).
A `PendingCall` assembles them; the stream emits the call, whole, once Vertex says it is complete.
Anything that cannot be placed without guessing is an upstream error, not a made-up argument.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import upstream_bad_stream

_JSON_PATH_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]")


class PendingCall:
    """A Vertex function call arriving in pieces: its name first, then `partialArgs` by JSON path."""

    __slots__ = ("name", "signature", "args", "open_string")

    def __init__(self, name: str, signature: str | None) -> None:
        self.name = name
        self.signature = signature
        self.args: dict[str, Any] = {}
        self.open_string: str | None = None  # the JSON path whose string value is still arriving


def add_partial_arg(pending: PendingCall, piece: Any, provider_name: str) -> None:
    path = piece.get("jsonPath") if isinstance(piece, dict) else None
    steps = json_path(path) if isinstance(path, str) else None
    if not steps:
        raise upstream_bad_stream(provider_name, f"a streamed function argument has an unusable path {path!r}")
    if "stringValue" in piece:
        value = piece["stringValue"]
        if pending.open_string == path:
            value = _get_path(pending.args, steps) + value
    elif "numberValue" in piece:
        value = piece["numberValue"]
    elif "boolValue" in piece:
        value = piece["boolValue"]
    elif "nullValue" in piece:
        value = None
    else:
        raise upstream_bad_stream(provider_name, f"a streamed function argument at {path!r} has no value")
    _set_path(pending.args, steps, value, provider_name)
    pending.open_string = path if piece.get("willContinue") and "stringValue" in piece else None


def json_path(path: str) -> list[Any] | None:
    """The steps of an RFC 9535 path such as `$.a.b[0]['c d']`; None if it is not that simple kind."""
    if not path.startswith("$"):
        return None
    steps: list[Any] = []
    position = 1
    while position < len(path):
        match = _JSON_PATH_STEP.match(path, position)
        if match is None:
            return None
        dotted, number, single, double = match.groups()
        steps.append(int(number) if number is not None else dotted or single or double or "")
        position = match.end()
    return steps


def _get_path(root: dict[str, Any], steps: list[Any]) -> str:
    node: Any = root
    for step in steps:
        node = node[step]
    return node if isinstance(node, str) else ""


def _set_path(root: dict[str, Any], steps: list[Any], value: Any, provider_name: str) -> None:
    node: Any = root
    for step, following in zip(steps, steps[1:] + [None]):
        fresh: Any = value if following is None else ([] if isinstance(following, int) else {})
        if isinstance(step, int):
            if not isinstance(node, list):
                raise upstream_bad_stream(provider_name, "streamed function arguments disagree on their shape")
            node.extend([None] * (step + 1 - len(node)))
            if following is None or node[step] is None:
                node[step] = fresh
        else:
            if not isinstance(node, dict):
                raise upstream_bad_stream(provider_name, "streamed function arguments disagree on their shape")
            if following is None or step not in node:
                node[step] = fresh
        node = node[step]
