"""reasoning_effort as a thinking budget, one table for every provider that thinks by budget.

The budget counts against the answer's output limit on Anthropic and Gemini alike, so when the client's
limit could not hold it, the limit sent is raised by the budget: the answer keeps the room the client
asked for (`output_limit`).
"""

from __future__ import annotations

from typing import Any

from ..errors import GatewayError, invalid_param

# Anthropic's smallest budget is 1024 tokens, so "minimal" is that on both providers.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}


def thinking_budget(effort: str, allowed: tuple[str, ...] = tuple(THINKING_BUDGETS)) -> int:
    """The budget for a (string) reasoning_effort; a 400 naming it for a value the provider cannot take."""
    if effort not in THINKING_BUDGETS or effort not in allowed:  # "none" is each provider's to read
        raise bad_effort(allowed)
    return THINKING_BUDGETS[effort]


def bad_effort(allowed: tuple[str, ...]) -> GatewayError:
    return invalid_param("reasoning_effort", f"'reasoning_effort' must be one of {', '.join(allowed)} here")


def output_limit(max_tokens: int | None, budget: int, default: int | None) -> int | None:
    """The output limit to send with a thinking budget: the client's, raised by the budget when it is not
    larger than the budget (Anthropic refuses budget_tokens >= max_tokens); the default plus the budget
    when the client gave none (None: the provider's own default)."""
    if max_tokens is None:
        return None if default is None else default + budget
    return max_tokens + budget if max_tokens <= budget else max_tokens


def google_thinking_config(body: dict[str, Any]) -> dict[str, Any] | None:
    """Google's own spelling in an OpenAI body (`extra_body.google.thinking_config`, as Gemini's OpenAI
    endpoint takes it), already checked by check_reasoning_fields."""
    extra = body.get("extra_body")
    google = extra.get("google") if isinstance(extra, dict) else None
    config = google.get("thinking_config") if isinstance(google, dict) else None
    return config if isinstance(config, dict) else None


def check_reasoning_fields(body: dict[str, Any]) -> None:
    config = google_thinking_config(body)
    if config is None:
        return
    where = "extra_body.google.thinking_config"
    budget = config.get("thinking_budget")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < -1):
        raise invalid_param(f"{where}.thinking_budget", "'thinking_budget' must be an integer, -1 (dynamic) or more",
                            "invalid_type")
    if config.get("include_thoughts") is not None and not isinstance(config["include_thoughts"], bool):
        raise invalid_param(f"{where}.include_thoughts", "'include_thoughts' must be a boolean", "invalid_type")
    if config.get("thinking_level") is not None and not isinstance(config["thinking_level"], str):
        raise invalid_param(f"{where}.thinking_level", "'thinking_level' must be a string", "invalid_type")
