"""The `moderation` section of providers.yaml: its settings and their parsing (the `moderate` middleware's own)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .moderation import ACTIONS, DEFAULT_MASK, Rule, RuleError, RuleSet, regex_rule, term_rule

if TYPE_CHECKING:
    from .config import Validator


@dataclass(frozen=True)
class ModerationService:
    """An OpenAI-moderation-shaped endpoint: POST {"input": ...} answering results[].flagged."""

    url: str
    timeout: float = 2.0
    window_chars: int = 400
    on_error: str = "allow"  # what a slow or failed check does: allow | block


@dataclass
class ModerationConfig:
    rules: RuleSet = field(default_factory=lambda: RuleSet(()))
    input: bool = True  # check the request's messages
    output: bool = True  # check the answer's content as it streams
    reasoning: bool = True  # and its reasoning text
    tool_arguments: bool = True  # and its tool-call arguments
    service: ModerationService | None = None

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.service is not None


_MODERATION_SWITCHES = ("input", "output", "reasoning", "tool_arguments")


def parse_moderation(v: Validator, raw: Any) -> ModerationConfig:
    ld = v.ld
    raw = v.mapping(raw, "moderation", ("rules", *_MODERATION_SWITCHES, "service"))
    config = ModerationConfig()
    for key in _MODERATION_SWITCHES:
        if key in raw:
            if isinstance(raw[key], bool):
                setattr(config, key, raw[key])
            else:
                ld.problem(f"moderation.{key}", "must be true or false")
    raw_rules = raw.get("rules", [])
    if not isinstance(raw_rules, list):
        ld.problem("moderation.rules", "must be a list of rules")
        raw_rules = []
    rules = []
    for i, raw_rule in enumerate(raw_rules):
        rule = _moderation_rule(v, raw_rule, i)
        if rule is not None:
            rules.append(rule)
    config.rules = RuleSet(tuple(rules))
    if "service" in raw:
        config.service = _moderation_service(v, raw["service"])
    return config


def _moderation_rule(v: Validator, raw: Any, i: int) -> Rule | None:
    ld = v.ld
    path = f"moderation.rules[{i}]"
    raw = v.mapping(raw, path, ("term", "regex", "action", "mask", "max_chars"), ("action",))
    if ("term" in raw) == ("regex" in raw):
        ld.problem(path, "needs exactly one of 'term' and 'regex'")
        return None
    action = raw.get("action")
    if "action" in raw and action not in ACTIONS:
        ld.problem(f"{path}.action", f"must be one of {', '.join(ACTIONS)}")
    mask = DEFAULT_MASK
    if "mask" in raw:
        if action == "block":
            ld.problem(f"{path}.mask", "only a redact rule takes a mask")
        elif not isinstance(raw["mask"], str):
            ld.problem(f"{path}.mask", "must be a string")
        else:
            mask = raw["mask"]
    max_chars = None
    if "max_chars" in raw:
        if "term" in raw:
            ld.problem(f"{path}.max_chars", "only a regex rule takes max_chars (a term's length is its own)")
        else:
            max_chars = v.number(raw["max_chars"], f"{path}.max_chars", 1, integer=True, exclusive=False)
    if "term" in raw:
        term = v.string(raw["term"], f"{path}.term")
        if term is None or action not in ACTIONS:
            return None
        return term_rule(i, term, action, mask)
    source = v.string(raw["regex"], f"{path}.regex")
    if source is None or action not in ACTIONS:
        return None
    try:
        return regex_rule(i, source, action, mask, max_chars)
    except RuleError as exc:
        ld.problem(f"{path}.regex", str(exc))
        return None


def _moderation_service(v: Validator, raw: Any) -> ModerationService | None:
    ld = v.ld
    raw = v.mapping(raw, "moderation.service", ("url", "timeout", "window_chars", "on_error"), ("url",))
    url = v.string(raw.get("url"), "moderation.service.url") if "url" in raw else None
    if url is not None and not url.startswith(("http://", "https://")):
        ld.problem("moderation.service.url", "must start with http:// or https://")
        url = None
    values: dict[str, Any] = {}
    if "timeout" in raw:
        values["timeout"] = v.number(raw["timeout"], "moderation.service.timeout")
    if "window_chars" in raw:
        values["window_chars"] = v.number(raw["window_chars"], "moderation.service.window_chars", 1, integer=True,
                                          exclusive=False)
    if "on_error" in raw:
        if raw["on_error"] in ("allow", "block"):
            values["on_error"] = raw["on_error"]
        else:
            ld.problem("moderation.service.on_error", "must be allow or block")
    if url is None or any(value is None for value in values.values()):
        return None
    if "timeout" in values:
        values["timeout"] = float(values["timeout"])
    return ModerationService(url, **values)
