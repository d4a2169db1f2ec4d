"""reasoning_effort as a thinking budget, one table for every provider that thinks by budget.

The budget counts against the answer's output limit on Anthropic and Gemini alike, so when the client's
limit could not hold it, the limit sent is raised by the budget: the answer keeps the room the client
asked for (`output_limit`).
"""

from __future__ import annotations

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
