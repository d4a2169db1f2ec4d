"""The `resume` section: where resumable streams keep their events while the client may come back (issue 14)."""

from __future__ import annotations

from typing import Any

from .backends import parse_backend
from .loader import Validator
from .model import ResumeConfig


def parse_resume(v: Validator, raw: Any) -> ResumeConfig:
    ld = v.ld
    raw = v.mapping(raw, "resume", ("backend", "url", "grace", "max_bytes", "max_total_bytes"))
    backend, url = parse_backend(v, raw, "resume", ResumeConfig.url)
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
