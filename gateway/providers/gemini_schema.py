"""JSON Schema rewritten into the OpenAPI subset Gemini's `parameters` and `responseSchema` accept.

Gemini's Schema has no `$ref`, so local references are inlined: each reference gets a copy of its
definition. That copying is where a small schema can grow without bound (definitions that each refer to
the next twice double at every level: 2 KB of schema becomes gigabytes), so it is bounded per request,
over every tool's parameters and the response schema together, and a request past a bound is a 400
naming the schema (its tool):
- at most MAX_SCHEMA_NODES schemas produced (`schema_too_large`);
- at most MAX_SCHEMA_TEXT characters of text and list entries copied into them: descriptions,
  patterns, enum values, property names, `required` lists (`schema_too_large`), since what is copied
  is sent once per copy, and read once per copy;
- at most MAX_SCHEMA_DEPTH nested levels, each inlined `$ref` counting as one (`schema_too_deep`);
- a `$ref` that refers back to a definition it is inside is refused (`schema_ref_cycle`): Gemini's
  schemas cannot express recursion.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..errors import GatewayError

MAX_SCHEMA_NODES = 10_000
MAX_SCHEMA_TEXT = 1_000_000
MAX_SCHEMA_DEPTH = 48  # with two JSON levels per schema level, well inside orjson's 255

# JSON Schema keywords Gemini's Schema accepts and that are copied as they are, by the type they must have.
_TEXT_KEYS = ("description", "pattern")
_NUMBER_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minimum",
                "maximum")
_FORMATS = {"string": frozenset({"enum", "date-time"}), "integer": frozenset({"int32", "int64"}),
            "number": frozenset({"float", "double"})}


class SchemaBudget:
    """What one request's schemas may still produce: shared by its tools and its response_format."""

    __slots__ = ("nodes", "text")

    def __init__(self) -> None:
        self.nodes = MAX_SCHEMA_NODES
        self.text = MAX_SCHEMA_TEXT


def parameters_schema(schema: Any, param: str = "parameters", budget: SchemaBudget | None = None) -> dict[str, Any] | None:
    """A function's parameters for Gemini; None (no parameters) for an object without properties,
    which Gemini rejects."""
    if not isinstance(schema, dict):
        return None
    cleaned = gemini_schema(schema, param, budget)
    if not cleaned or (cleaned.get("type") == "object" and not cleaned.get("properties")):
        return None
    return cleaned


def gemini_schema(schema: dict[str, Any], param: str = "schema", budget: SchemaBudget | None = None) -> dict[str, Any]:
    """A JSON Schema rewritten into the OpenAPI subset Gemini accepts.

    Local `$ref`s are inlined (an unknown one becomes a plain object), `type: [X, "null"]` and
    `anyOf: [X, {type: null}]` become `nullable`, `const` becomes a one-value enum, and keywords
    Gemini rejects (`$schema`, `additionalProperties`, `default`, `examples`, `title`...) are dropped.
    Property names are data, not keywords: a property called "title" stays.
    Raises a 400 naming `param` when the schema is recursive or too large once inlined.
    """
    definitions: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        if isinstance(schema.get(key), dict):
            definitions.update(schema[key])
    return _Converter(definitions, budget or SchemaBudget(), param).schema(schema, (), 0)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Converter:
    __slots__ = ("definitions", "budget", "param")

    def __init__(self, definitions: dict[str, Any], budget: SchemaBudget, param: str) -> None:
        self.definitions = definitions
        self.budget = budget
        self.param = param

    def _too_large(self, what: str) -> GatewayError:
        return GatewayError(400, f"the schema of '{self.param}' is too large for Gemini once its $refs are inlined: "
                            f"the request's schemas may produce at most {what}", param=self.param,
                            code="schema_too_large")

    def _spend(self, units: int) -> None:
        """Charged before the work that reads `units` characters or entries, so that no copy goes unpaid."""
        self.budget.text -= units
        if self.budget.text < 0:
            raise self._too_large(f"{MAX_SCHEMA_TEXT} characters and list entries of text")

    def _text(self, value: str) -> str:
        self._spend(len(value))
        return value

    def schema(self, schema: Any, refs: tuple[str, ...], depth: int) -> dict[str, Any]:
        if depth > MAX_SCHEMA_DEPTH:
            raise GatewayError(400, f"the schema of '{self.param}' nests deeper than {MAX_SCHEMA_DEPTH} levels "
                               "(each inlined $ref counts as one)", param=self.param, code="schema_too_deep")
        self.budget.nodes -= 1
        if self.budget.nodes < 0:
            raise self._too_large(f"{MAX_SCHEMA_NODES} schema nodes")
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self._inlined(schema, ref, refs, depth)
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and all_of:
            self._spend(len(schema))
            schema = _merged([self.schema(s, refs, depth + 1) for s in all_of]
                             + [{k: v for k, v in schema.items() if k != "allOf"}])
        out: dict[str, Any] = {}
        kind = schema.get("type")
        if isinstance(kind, list):
            self._spend(len(kind))
            kinds = [k for k in kind if isinstance(k, str) and k != "null"]
            if "null" in kind:
                out["nullable"] = True
            if len(kinds) == 1:
                out["type"] = kinds[0]
            elif kinds:
                out["anyOf"] = [self.schema({"type": k}, refs, depth + 1) for k in kinds]
        elif kind == "null":
            out["nullable"] = True
        elif isinstance(kind, str):
            out["type"] = self._text(kind)
        variants = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(variants, list) and variants:
            self._add_variants(out, variants, refs, depth)
        for key in _TEXT_KEYS:
            if isinstance(schema.get(key), str):
                out[key] = self._text(schema[key])
        for key in _NUMBER_KEYS:
            if _is_number(schema.get(key)):
                out[key] = schema[key]
        if schema.get("nullable") is True:
            out["nullable"] = True
        self._add_enum(out, schema)
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS.get(str(out.get("type")), ()):
            out["format"] = fmt
        properties = schema.get("properties")
        if isinstance(properties, dict):
            out["properties"] = {self._text(name): self.schema(value, refs, depth + 1)
                                 for name, value in properties.items()}
            listed = schema.get("required")
            if isinstance(listed, list):
                self._spend(len(listed))
            required = [self._text(name) for name in listed if isinstance(name, str) and name in properties] \
                if isinstance(listed, list) else []
            if required:
                out["required"] = required
        items = schema.get("items")
        if isinstance(items, dict):
            out["items"] = self.schema(items, refs, depth + 1)
        elif isinstance(items, list) and items:
            out["items"] = {"anyOf": [self.schema(s, refs, depth + 1) for s in items]}
        return out

    def _inlined(self, schema: dict[str, Any], ref: str, names: tuple[str, ...], depth: int) -> dict[str, Any]:
        """The definition `ref` names, copied in; `names` are the definitions being copied around it."""
        name = ref.rsplit("/", 1)[-1] if ref.startswith(("#/$defs/", "#/definitions/")) else None
        target = self.definitions.get(name) if name else None
        if target is None:
            out = {"type": "object"}
        elif name in names:
            shown = ref if len(ref) <= 100 else ref[:100] + "..."
            raise GatewayError(400, f"the schema of '{self.param}' is recursive ('{shown}' refers back to a "
                               "definition it is inside): Gemini's schemas cannot express recursion",
                               param=self.param, code="schema_ref_cycle")
        else:
            assert name is not None  # target was found by name
            out = self.schema(target, names + (name,), depth + 1)
        if isinstance(schema.get("description"), str):
            out["description"] = self._text(schema["description"])
        return out

    def _add_variants(self, out: dict[str, Any], variants: list[Any], refs: tuple[str, ...], depth: int) -> None:
        kept = [v for v in variants if not (isinstance(v, dict) and v.get("type") == "null")]
        if len(kept) < len(variants):
            out["nullable"] = True
        cleaned = [self.schema(v, refs, depth + 1) for v in kept]
        if len(cleaned) == 1:
            nullable = out.get("nullable")
            out.update(cleaned[0])
            if nullable:
                out["nullable"] = True
        elif cleaned:
            out["anyOf"] = cleaned

    def _add_enum(self, out: dict[str, Any], schema: dict[str, Any]) -> None:
        values = [schema["const"]] if "const" in schema else schema.get("enum")
        if not isinstance(values, list) or not values:
            return
        self._spend(len(values))
        if None in values:
            out["nullable"] = True
            values = [v for v in values if v is not None]
        if values and all(isinstance(v, str) for v in values):
            self._spend(sum(map(len, values)))
            out["enum"] = values
            out.setdefault("type", "string")
        elif values:  # Gemini's enums are strings only: keep the allowed values where the model reads them
            listed = ", ".join(orjson.dumps(v).decode() for v in values)
            out["description"] = self._text(f"{out.get('description', '')} (one of: {listed})".lstrip())


def _merged(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    """allOf as one schema: later keys win, properties and required add up."""
    out: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: dict[str, None] = {}  # ordered, and no quadratic `in` on a list
    for schema in schemas:
        if isinstance(schema.get("properties"), dict):
            properties.update(schema["properties"])
        if isinstance(schema.get("required"), list):
            required.update((r, None) for r in schema["required"] if isinstance(r, str))
        out.update({k: v for k, v in schema.items() if k not in ("properties", "required")})
    if properties:
        out["properties"] = properties
    if required:
        out["required"] = list(required)
    return out
