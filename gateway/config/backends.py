"""`backend: memory | redis` and its `url`, as the `limits` and `resume` sections both take them."""

from __future__ import annotations

from typing import Any

from .loader import Validator, expand


def parse_backend(v: Validator, raw: dict[str, Any], section: str, default_url: str) -> tuple[str, str]:
    """The section's backend and Redis url; each problem names `<section>.backend` or `<section>.url`."""
    ld = v.ld
    backend = raw.get("backend", "memory")
    if backend not in ("memory", "redis"):
        ld.problem(f"{section}.backend", "must be memory or redis")
        backend = "memory"
    url = default_url
    if "url" in raw and v.string(raw["url"], f"{section}.url"):
        missing: list[str] = []  # the url may carry a password from the environment: never echo it
        url = expand(raw["url"], missing)
        if missing:
            ld.problem(f"{section}.url", f"{' and '.join(dict.fromkeys(missing))} is not set")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            ld.problem(f"{section}.url", "must start with redis://, rediss:// or unix://")
        if backend != "redis":
            ld.problem(f"{section}.url", "only the redis backend takes a url")
    return backend, url
