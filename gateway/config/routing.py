"""The `routes` section: a route name stands for an ordered list of `<provider>/<model>` targets."""

from __future__ import annotations

from typing import Any

from .loader import Validator
from .model import ProviderConfig


def parse_routes(v: Validator, raw_routes: Any, providers: dict[str, ProviderConfig]) -> dict[str, tuple[str, ...]]:
    routes: dict[str, tuple[str, ...]] = {}
    if not isinstance(raw_routes, dict):
        v.ld.problem("routes", "must be a mapping of route names to models")
        raw_routes = {}
    for name, targets in raw_routes.items():
        path = f"routes.{name}"
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            v.ld.problem(path, "must be a model name or a non-empty list of them")
            continue
        if "/" in name:
            v.ld.problem(path, "a route name must not contain '/' (it would shadow '<provider>/<model>')")
        for j, target in enumerate(targets):
            provider_name, slash, model = target.partition("/")
            if not slash or not model:
                v.ld.problem(f"{path}[{j}]", f"'{target}' must be '<provider>/<model>'")
            elif provider_name not in providers:
                v.ld.problem(f"{path}[{j}]", f"unknown provider '{provider_name}'")
            elif (models := providers[provider_name].models) is not None and model not in models:
                v.ld.problem(f"{path}[{j}]", f"model '{model}' is not in provider '{provider_name}' models")
        routes[name] = tuple(targets)
    return routes
