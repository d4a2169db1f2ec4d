"""The `auth`, `keys` and `limits` sections: who may call the gateway, and how much each client key may use."""

from __future__ import annotations

from typing import Any

from .hosts import exposure_problem
from .backends import parse_backend
from .loader import NAME, SHA256_HEX, Validator
from .model import LIMIT_NAMES, MAX_COALESCE_MS, ClientKey, KeyLimits, LimitsConfig, ServerConfig


def parse_auth(v: Validator, root: dict[str, Any], server: ServerConfig,
               middlewares: tuple[str, ...]) -> tuple[str | None, tuple[ClientKey, ...]]:
    ld = v.ld
    auth = root.get("auth")
    if "auth" in root and auth not in ("keys", "none"):
        ld.problem("auth", "must be keys or none")
        auth = None
    keys: list[ClientKey] = []
    listed = root.get("keys", [])
    if not isinstance(listed, list):
        ld.problem("keys", "must be a list of client keys")
        listed = []
    ids: set[str] = set()
    digests: set[str] = set()
    for i, raw in enumerate(listed):
        key = _client_key(v, raw, f"keys[{i}]")
        if key is None:
            continue
        if key.id in ids:
            ld.problem(f"keys[{i}].id", f"duplicate key id '{key.id}'")
        if key.sha256 in digests:
            ld.problem(f"keys[{i}].sha256", "the same key is listed twice")
        ids.add(key.id)
        digests.add(key.sha256)
        if key.limits and "ratelimit" not in middlewares:
            ld.problem(f"keys[{i}].limits", "limits need the ratelimit middleware: add it to middlewares")
        keys.append(key)
    if auth == "keys" and not listed:
        ld.problem("auth", "auth: keys needs at least one entry under keys")
    if auth == "none" and listed:
        ld.problem("keys", "auth: none serves without keys: remove the keys or write auth: keys")
    problem = exposure_problem(not listed, auth, server.host)
    if problem:
        ld.problem("server.host", problem)
    return auth, tuple(keys)


def _client_key(v: Validator, raw: Any, path: str) -> ClientKey | None:
    ld = v.ld
    raw = v.mapping(raw, path, ("id", "sha256", "models", "limits", "resumable", "coalesce_ms"), ("id", "sha256"))
    key_id = v.string(raw["id"], f"{path}.id") if "id" in raw else None
    if key_id is not None and not NAME.match(key_id):
        ld.problem(f"{path}.id", "may hold letters, digits, '.', '_' and '-' only")
        key_id = None
    digest = raw.get("sha256")
    if "sha256" in raw and (not isinstance(digest, str) or not SHA256_HEX.match(digest)):
        ld.problem(f"{path}.sha256", "must be the 64 hex digits of the key's SHA-256 (gateway hash-key prints it)")
        digest = None
    models = None
    if "models" in raw:
        models = raw["models"]
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            ld.problem(f"{path}.models", "must be a list of model patterns such as 'openai/*'")
            models = None
        else:
            models = tuple(models)
    limits = KeyLimits()
    if "limits" in raw:
        values = v.mapping(raw["limits"], f"{path}.limits", LIMIT_NAMES)
        checked = {name: v.number(values[name], f"{path}.limits.{name}", 1, integer=True, exclusive=False)
                   for name in LIMIT_NAMES if name in values}
        limits = KeyLimits(**{name: n for name, n in checked.items() if n is not None})
    resumable = False
    if "resumable" in raw:
        if isinstance(raw["resumable"], bool):
            resumable = raw["resumable"]
        else:
            ld.problem(f"{path}.resumable", "must be true or false")
    coalesce_ms = None
    if "coalesce_ms" in raw:
        coalesce_ms = v.number(raw["coalesce_ms"], f"{path}.coalesce_ms", 0, integer=True, exclusive=False)
        if coalesce_ms is not None and coalesce_ms > MAX_COALESCE_MS:
            ld.problem(f"{path}.coalesce_ms", f"must be at most {MAX_COALESCE_MS}")
            coalesce_ms = None
    if key_id is None or digest is None:
        return None
    return ClientKey(key_id, digest.lower(), models, limits, resumable, coalesce_ms)


def parse_limits(v: Validator, raw: Any) -> LimitsConfig:
    ld = v.ld
    raw = v.mapping(raw, "limits", ("backend", "url", "on_backend_error", "redis_pool_size", "redis_pool_wait"))
    backend, url = parse_backend(v, raw, "limits", LimitsConfig.url)
    on_error = raw.get("on_backend_error", "open")
    if on_error not in ("open", "closed"):
        ld.problem("limits.on_backend_error", "must be open or closed")
        on_error = "open"
    pool: dict[str, Any] = {}
    for name in ("redis_pool_size", "redis_pool_wait"):
        if name in raw:
            if backend != "redis":
                ld.problem(f"limits.{name}", f"only the redis backend takes {name}")
            number = v.number(raw[name], f"limits.{name}", 1 if name == "redis_pool_size" else 0,
                              integer=name == "redis_pool_size", exclusive=name == "redis_pool_wait")
            if number is not None:
                pool[name] = number if name == "redis_pool_size" else float(number)
    return LimitsConfig(backend, url, on_error, **pool)
