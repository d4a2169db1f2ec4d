"""Reading providers.yaml: the YAML with the line of every key path, `${VAR}` expansion, and the checks every
section's parser is given (each problem named by its key path and line)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# fields whose parser expands `${VAR}` itself: an unset variable there disables the provider (or is worded
# without echoing a secret), it is not a load problem
_EXPANDS_ITSELF = re.compile(r"^(providers\[\d+\]\.(base_url|api_key|headers\..+)|limits\.url|resume\.url)$")
_PARENT = re.compile(r"(\.[^.\[]*|\[\d+\])$")
# names of providers and client keys
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# the hex SHA-256 of a client key, as `gateway hash-key` prints it
SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class Loader:
    """Turns the YAML node tree into plain values, remembering the line of every key path."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.problems: list[Problem] = []
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else None
            self.problems.append(Problem("", line, f"not valid YAML: {getattr(exc, 'problem', exc)}"))
            self.data: Any = None
            return
        self._scalars = yaml.SafeLoader("")  # resolves scalar types (int, bool, null...) as safe_load does
        self.data = self._value(node, "") if node is not None else {}

    def _value(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                if key in out:
                    self.problems.append(Problem(child, key_node.start_mark.line + 1, "duplicate key"))
                out[key] = self._value(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" and "${" in node.value \
                and not _EXPANDS_ITSELF.match(path):
            return self._expanded(node, path)
        return self._scalars.construct_object(node, deep=True)

    def _expanded(self, node: yaml.ScalarNode, path: str) -> Any:
        """`${VAR}` in any scalar: an unset variable is a problem that names it; a plain (unquoted) value
        made of one variable takes the type its text has, so that `port: ${PORT}` is a number."""
        missing: list[str] = []
        text = expand(node.value, missing)
        for name in dict.fromkeys(missing):
            self.problem(path, f"{name} is not set")
        if missing:
            return node.value  # unexpanded: the field's own checks then add no second problem for it
        if node.style is None and VAR.fullmatch(node.value):
            tag = self._scalars.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]  # PyYAML stubs leave it untyped
            if tag != "tag:yaml.org,2002:str":
                return self._scalars.construct_object(yaml.ScalarNode(tag, text), deep=True)
        return text

    def problem(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        probe = path
        while line is None and probe:  # the nearest enclosing key that has a line
            parent = _PARENT.sub("", probe)
            probe = parent if parent != probe else ""
            line = self.lines.get(probe)
        self.problems.append(Problem(path, line, message))


def expand(value: str, missing: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name: str = match.group(1)
        default: str | None = match.group(2)
        found = os.environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        missing.append(name)
        return ""

    return VAR.sub(replace, value)


class Validator:
    """The checks a section parser runs, each adding its problem to the loader; a middleware's section
    parser is given one too (gateway/pipeline/spec.py)."""

    def __init__(self, loader: Loader) -> None:
        self.ld = loader

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.ld.problem(path, "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                self.ld.problem(f"{path}.{key}" if path else key, f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.ld.problem(path, f"missing required key '{key}'")
        return value

    def number(self, value: Any, path: str, minimum: float = 0, integer: bool = False,
               exclusive: bool = True) -> Any:  # an int when integer=True, None when refused
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.ld.problem(path, f"must be {'an integer' if integer else 'a number'}")
            return None
        if value < minimum or (exclusive and value == minimum):
            self.ld.problem(path, f"must be {'greater than' if exclusive else 'at least'} {minimum}")
            return None
        return value

    def string(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.ld.problem(path, "must be a non-empty string")
            return None
        return value
