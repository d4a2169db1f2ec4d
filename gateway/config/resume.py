"""The `resume` section: where resumable streams keep their events while the client may come back (issue 14)."""

from __future__ import annotations

from typing import Any

from .loader import Validator, expand
from .model import ResumeConfig


def parse_resume(v: Validator, raw: Any) -> ResumeConfig:
    ld = v.ld
    raw = v.mapping(raw, "resume", ("backend", "url", "grace", "max_bytes", "max_total_bytes"))
    backend = raw.get("backend", "memory")
    if backend not in ("memory", "redis"):
        ld.problem("resume.backend", "must be memory or redis")
        backend = "memory"
    url = ResumeConfig.url
    if "url" in raw and v.string(raw["url"], "resume.url"):
        missing: list[str] = []  # the url may carry a password from the environment: never echo it
        url = expand(raw["url"], missing)
        if missing:
            ld.problem("resume.url", f"{' and '.join(dict.fromkeys(missing))} is not set")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            ld.problem("resume.url", "must start with redis://, rediss:// or unix://")
        if backend != "redis":
            ld.problem("resume.url", "only the redis backend takes a url")
    numbers: dict[str, Any] = {}
    for name in ("grace", "max_bytes", "max_total_bytes"):
        if name in raw:
            number = v.number(raw[name], f"resume.{name}", 0 if name == "grace" else 1,
                              integer=name != "grace", exclusive=False)
            if number is not None:
                numbers[name] = float(number) if name == "grace" else number
    settings = ResumeConfig(backend, url, **numbers)
    if settings.max_bytes > settings.max_total_bytes:
        ld.problem("resume.max_bytes", "must not be larger than resume.max_total_bytes")
    return settings
