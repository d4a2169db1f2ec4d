"""Checks client bodies for /chat/completions and /completions before any provider adapter reads them.

One validation for every provider: each field an adapter reads is checked for its shape here, and each
problem is a 400 in OpenAI's error shape naming its `param`. The body's nesting is checked first
(at most MAX_NESTING levels), then the model name (at most MAX_MODEL_LENGTH characters, no control
characters), then the fields.

Fields with two spellings are read through one rule each, here, so that every adapter reads them alike:
`max_output_tokens` (`max_completion_tokens`, else the older `max_tokens`) and `prompt_text` (the
completions `prompt`, a string or a list of strings joined by newlines, for formats that take one text).
The body itself is passed on as the client sent it: an OpenAI-compatible provider gets both spellings.
"""

from __future__ import annotations

from typing import Any

from ..errors import invalid_param
from .chat import ROLES, check_chat_fields
from .common import MAX_MODEL_LENGTH, MAX_N, MAX_NESTING, check_common

__all__ = ["MAX_MODEL_LENGTH", "MAX_N", "MAX_NESTING", "ROLES", "max_output_tokens", "prompt_text", "validate_chat",
           "validate_completion"]


def validate_chat(body: Any) -> dict[str, Any]:
    checked = check_common(body)
    check_chat_fields(checked)
    return checked


def validate_completion(body: Any) -> dict[str, Any]:
    checked = check_common(body)
    prompt = checked.get("prompt")
    if prompt is None:
        raise invalid_param("prompt", "you must provide a prompt parameter", "missing_required_parameter")
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(p, str) for p in prompt):
            raise invalid_param("prompt", "'prompt' must be a string or a non-empty array of strings", "invalid_type")
    elif not isinstance(prompt, str):
        raise invalid_param("prompt", "'prompt' must be a string or an array of strings", "invalid_type")
    return checked


def max_output_tokens(body: dict[str, Any]) -> int | None:
    """The answer's token limit, whichever spelling the (validated) body used; the newer one wins."""
    limit: int | None = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit


def prompt_text(body: dict[str, Any]) -> str:
    """A (validated) completions prompt as one text: a list's prompts joined by newlines."""
    prompt = body["prompt"]
    return prompt if isinstance(prompt, str) else "\n".join(prompt)
