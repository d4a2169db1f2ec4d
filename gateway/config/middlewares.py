"""The `middlewares` list and the sections the middlewares own, as their specs declare (gateway/pipeline/)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .loader import Validator

if TYPE_CHECKING:
    from ..pipeline.spec import MiddlewareSpec


def _specs() -> dict[str, MiddlewareSpec]:
    from ..pipeline import MIDDLEWARES  # here, not at the top: the middlewares import gateway.config

    return MIDDLEWARES


def section_keys() -> tuple[str, ...]:
    """The top-level keys of the middlewares' own sections."""
    return tuple(spec.section.key for spec in _specs().values() if spec.section is not None)


def parse_middlewares(v: Validator, root: dict[str, Any]) -> tuple[str, ...]:
    specs = _specs()
    middlewares: tuple[str, ...] = ("normalize",)
    if "middlewares" in root:
        raw_mw = root["middlewares"]
        if not isinstance(raw_mw, list) or not all(isinstance(m, str) for m in raw_mw):
            v.ld.problem("middlewares", "must be a list of names")
        else:
            for j, name in enumerate(raw_mw):
                if name not in specs:
                    v.ld.problem(f"middlewares[{j}]", f"unknown middleware '{name}' (known: {', '.join(specs)})")
                elif raw_mw.index(name) != j:
                    v.ld.problem(f"middlewares[{j}]", f"'{name}' is listed twice")
                else:
                    for before in specs[name].after:
                        if before not in raw_mw:
                            v.ld.problem(f"middlewares[{j}]", f"'{name}' needs '{before}' before it in the list")
                        elif raw_mw.index(before) > j:
                            v.ld.problem(f"middlewares[{j}]", f"'{name}' must come after '{before}' (it works on "
                                         f"what '{before}' makes): move it later in the list")
            middlewares = tuple(raw_mw)
    return middlewares


def parse_settings(v: Validator, root: dict[str, Any]) -> dict[str, object]:
    settings: dict[str, object] = {}  # every middleware's section, listed or not (the cli notes one unused)
    for spec in _specs().values():
        if spec.section is not None:
            key = spec.section.key
            settings[spec.name] = spec.section.parse(v, root[key]) if key in root else spec.section.default()
    return settings
