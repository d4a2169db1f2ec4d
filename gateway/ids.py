"""Ids the gateway makes: request ids and completion ids (32 hex digits, 128 random bits)."""

from __future__ import annotations

import os


def random_id() -> str:
    """Like uuid.uuid4().hex in length and randomness, at a fifth of its cost (it runs several times per request)."""
    return os.urandom(16).hex()
