"""How the coalesce stage merges: which chunks may be held, and how a batch of held chunks becomes one
chunk that means the same (gateway/pipeline/coalesce.py decides when a batch goes out)."""

from __future__ import annotations

from typing import Any

_TEXT_FIELDS = frozenset({"content", "reasoning_content", "reasoning", "refusal"})
_CHOICE_KEYS = frozenset({"index", "delta", "logprobs", "finish_reason"})
_TOOL_HEAD_KEYS = ("id", "type", "extra_content")  # kept from the first fragment of an index
_TOOL_KEYS = frozenset({"index", "function", *_TOOL_HEAD_KEYS})
_FUNCTION_KEYS = frozenset({"name", "arguments"})
_ARGUMENTS_FRAGMENT = frozenset({"index", "function"})
_MISSING = object()
# A chunk as this stage reads it: checked field by field (holdable) before it is merged.
Raw = dict[str, Any]


class _Tool:
    __slots__ = ("head", "arguments")

    def __init__(self, call: dict[str, Any]) -> None:
        function = call.get("function")
        self.head = {**call, "function": dict(function) if isinstance(function, dict) else {}}
        arguments = self.head["function"].get("arguments")
        self.arguments: list[str] | None = [arguments] if isinstance(arguments, str) else None

    def fits(self, call: dict[str, Any]) -> bool:
        """A later fragment of this call: nothing in it but arguments, or the head's own values again."""
        head = self.head
        for key in _TOOL_HEAD_KEYS:
            if key in call and call[key] != head.get(key, _MISSING):
                return False
        function = call.get("function")
        if function is None:
            return True
        name = function.get("name")
        return name is None or name == head["function"].get("name")

    def add(self, call: dict[str, Any]) -> None:
        function = call.get("function")
        arguments = function.get("arguments") if function is not None else None
        if isinstance(arguments, str):
            if self.arguments is None:
                self.arguments = [arguments]
            else:
                self.arguments.append(arguments)

    def call(self) -> dict[str, Any]:
        if self.arguments is not None:
            self.head["function"]["arguments"] = "".join(self.arguments)
        return self.head


class _Pending:
    """One choice's held deltas: text per field, tool calls per index, in order of first appearance."""

    __slots__ = ("role", "parts", "last", "last_tool")

    def __init__(self) -> None:
        self.role: object = _MISSING
        # field name -> its pieces, or tool index -> _Tool; "tool_calls" is placed where the first call came
        self.parts: dict[str | int, Any] = {}
        self.last: str | None = None  # the field the latest piece went to ("tool_calls" for any call)
        self.last_tool: int | None = None  # the tool index the latest fragment went to

    def fits(self, delta: dict[str, Any]) -> bool:
        """Whether `delta` can join without changing what a client reads in order: a field (or, among
        the tool calls, an index) may not come back once another has followed it."""
        parts, last, last_tool = self.parts, self.last, self.last_tool
        added: set[str | int] = set()
        for key, value in delta.items():
            if key == "role":
                if self.role is _MISSING and (parts or added):
                    return False  # a role leads its choice's deltas
                if self.role is not _MISSING and value != self.role:
                    return False
            elif key == "tool_calls":
                if ("tool_calls" in parts or "tool_calls" in added) and last != "tool_calls":
                    return False
                added.add(key)
                last = key
                for call in value:
                    index = call["index"]
                    tool = parts.get(index)
                    if tool is not None:
                        if last_tool != index or not tool.fits(call):
                            return False
                    elif index in added and last_tool != index:
                        return False
                    added.add(index)
                    last_tool = index
            elif value is not None:
                if (key in parts or key in added) and last != key:
                    return False
                added.add(key)
                last = key
        return True

    def add(self, delta: dict[str, Any]) -> None:
        parts = self.parts
        for key, value in delta.items():
            if key == "role":
                self.role = value
            elif key == "tool_calls":
                parts.setdefault(key, None)  # its place among the fields
                self.last = key
                for call in value:
                    index = call["index"]
                    tool = parts.get(index)
                    if tool is None:
                        parts[index] = _Tool(call)
                    else:
                        tool.add(call)
                    self.last_tool = index
            elif value is not None:
                pieces = parts.get(key)
                if pieces is None:
                    parts[key] = [value]
                else:
                    pieces.append(value)
                self.last = key

    def delta(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.role is _MISSING else {"role": self.role}
        calls = []
        for key, part in self.parts.items():
            if isinstance(key, int):
                calls.append(part.call())
            elif key == "tool_calls":
                out["tool_calls"] = calls  # filled in as the loop reaches the calls
            else:
                out[key] = "".join(part)
        return out


def holdable(chunk: Raw) -> bool:
    """Only text, indexed tool-call fragments and a role, in every choice: no finish, logprobs or usage."""
    choices = chunk.get("choices")
    if not choices or chunk.get("usage") is not None:
        return False
    for choice in choices:
        if (choice.get("finish_reason") or choice.get("logprobs") is not None or not isinstance(choice.get("index"), int)
                or not _CHOICE_KEYS.issuperset(choice)):
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return False
        for key, value in delta.items():
            if key in _TEXT_FIELDS:
                if value is not None and not isinstance(value, str):
                    return False
            elif key == "tool_calls":
                if not isinstance(value, list) or not all(_fragment(call) for call in value):
                    return False
            elif key != "role" or not isinstance(value, str):
                return False
    return True


def _fragment(call: object) -> bool:
    """A tool-call fragment with an index and only the fields a merged call keeps."""
    if not isinstance(call, dict) or not isinstance(call.get("index"), int) or not _TOOL_KEYS.issuperset(call):
        return False
    function = call.get("function")
    if function is None:
        return True
    if not isinstance(function, dict) or not _FUNCTION_KEYS.issuperset(function):
        return False
    arguments = function.get("arguments")
    return arguments is None or isinstance(arguments, str)


class Held:
    """The chunks held in the current window, merged per choice."""

    __slots__ = ("first", "envelope", "held", "choices")

    def __init__(self, first: Raw) -> None:
        self.first = first  # its envelope and extras go on the merged chunk
        self.envelope = {key: value for key, value in first.items() if key != "choices"}.items()
        self.held = 0
        self.choices: dict[int, _Pending] = {}

    def same_envelope(self, chunk: Raw) -> bool:
        return len(chunk) == len(self.first) and self.envelope <= chunk.items()

    def extend(self, chunk: Raw) -> bool:
        """The common case in a few lookups: one choice's next piece of the text field (or the tool
        call's arguments) it wrote last. False: let `fits` and `add` decide."""
        choices = chunk.get("choices")
        if type(choices) is not list or len(choices) != 1:
            return False
        choice = choices[0]
        if (type(choice) is not dict or choice.keys() != _CHOICE_KEYS or choice["finish_reason"] is not None
                or choice["logprobs"] is not None):
            return False
        pending = self.choices.get(choice["index"])
        delta = choice["delta"]
        if pending is None or type(delta) is not dict or len(delta) != 1:
            return False
        ((key, value),) = delta.items()
        if key != pending.last:
            return False
        if type(value) is str:
            if key == "tool_calls" or not self.same_envelope(chunk):
                return False
            pending.parts[key].append(value)
        else:
            if type(value) is not list or len(value) != 1:
                return False
            call = value[0]
            if type(call) is not dict or call.keys() != _ARGUMENTS_FRAGMENT or call["index"] != pending.last_tool:
                return False
            function = call["function"]
            if (type(function) is not dict or len(function) != 1 or type(function.get("arguments")) is not str
                    or not self.same_envelope(chunk)):
                return False
            pending.parts[call["index"]].add(call)
        self.held += 1
        return True

    def fits(self, chunk: Raw) -> bool:
        if not self.same_envelope(chunk):
            return False
        choices = self.choices
        for choice in chunk["choices"]:
            pending = choices.get(choice["index"])
            if pending is not None and not pending.fits(choice["delta"]):
                return False
        return True

    def add(self, chunk: Raw) -> None:
        self.held += 1
        choices = self.choices
        for choice in chunk["choices"]:
            index = choice["index"]
            pending = choices.get(index)
            if pending is None:
                pending = choices[index] = _Pending()
            pending.add(choice["delta"])

    def chunk(self, without: int | None = None) -> Raw | None:
        """The merged chunk (the held one itself when there was one), leaving out choice `without`."""
        if self.held == 1 and without is None:
            return self.first
        choices = [{"index": index, "delta": pending.delta(), "logprobs": None, "finish_reason": None}
                   for index, pending in self.choices.items() if index != without]
        if not choices:
            return None
        return {**self.first, "choices": choices}

    def merged_into(self, barrier: Raw) -> list[Raw]:
        """The batch and the chunk that closes it, as few chunks as keep the exact meaning: the batch's
        text goes ahead of the barrier's own in the barrier when it is one choice that can take it."""
        choices = barrier.get("choices")
        if (choices and len(choices) == 1 and barrier.get("usage") is None and self.same_envelope(barrier)):
            choice = choices[0]
            pending = self.choices.get(choice.get("index"))
            delta = choice.get("delta")
            if (pending is not None and isinstance(delta, dict) and choice.get("logprobs") is None
                    and _CHOICE_KEYS.issuperset(choice) and _mergeable(delta) and pending.fits(delta)):
                rest = self.chunk(without=choice["index"])
                pending.add(delta)
                merged = {**choice, "delta": pending.delta()}
                out: list[Raw] = [rest] if rest is not None else []
                out.append({**barrier, "choices": [merged]})
                return out
        whole = self.chunk()
        return [whole, barrier] if whole is not None else [barrier]


def _mergeable(delta: dict[str, Any]) -> bool:
    """A barrier's delta the batch can go into: text and tool fragments as held ones are, and other
    fields (Anthropic's signature) that only need a place after the text."""
    for key, value in delta.items():
        if key in _TEXT_FIELDS:
            if value is not None and not isinstance(value, str):
                return False
        elif key == "tool_calls":
            if not isinstance(value, list) or not all(_fragment(call) for call in value):
                return False
        elif not isinstance(value, str):  # role, or a field that only needs a place after the text
            return False
    return True
