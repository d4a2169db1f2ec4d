"""Client keys: who is calling (`Authorization: Bearer <key>`) and which models that key may use."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable

from aiohttp import web

from .config import ClientKey
from .context import RequestContext
from .errors import GatewayError
from .appkeys import generation


def hash_key(key: bytes) -> str:
    """What `keys[].sha256` holds for a key."""
    return hashlib.sha256(key).hexdigest()


def presented_digest(presented: str) -> bytes:
    """The SHA-256 of a key a client presented (any bytes it sent in the header, kept as they came)."""
    return hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()


def bearer_token(request: web.BaseRequest) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None when there is none."""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    presented = presented.strip()
    return presented if scheme.lower() == "bearer" and presented else None


class KeyTable:
    """The configured keys by the SHA-256 of the key.

    Looking the presented key's digest up in a dict is safe against timing attacks: how long the lookup
    takes depends on the digest, and an attacker cannot steer a digest towards a stored one without
    inverting SHA-256, so the timing says nothing about any key. The final equality check still uses
    `hmac.compare_digest`, so that no byte-by-byte comparison of secrets is ever made.
    """

    def __init__(self, keys: Iterable[ClientKey]) -> None:
        self._by_digest = {bytes.fromhex(key.sha256): key for key in keys}
        self._patterns = {key.id: _compile(key.models) for key in self._by_digest.values() if key.models is not None}

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def find(self, presented: str) -> ClientKey | None:
        digest = presented_digest(presented)
        key = self._by_digest.get(digest)
        if key is None or not hmac.compare_digest(digest, bytes.fromhex(key.sha256)):
            return None
        return key

    def allows(self, key: ClientKey, *names: str) -> bool:
        """Whether any of `names` (what the client wrote, what it resolved to) matches the key's models."""
        pattern = self._patterns.get(key.id)
        return pattern is None or any(pattern.match(name) for name in names)


def _compile(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))



def _missing_key() -> GatewayError:
    return GatewayError(401, "You didn't provide an API key: send it in an Authorization header as 'Bearer <key>'.",
                        code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})


def _invalid_key() -> GatewayError:  # never names the key: it may be a real one sent to the wrong place
    return GatewayError(401, "Incorrect API key provided: check the key, or ask the gateway's operator for one.",
                        code="invalid_api_key", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def authenticate(request: web.Request) -> ClientKey | None:
    """The calling key; None when the gateway serves without keys. A missing or unknown key is a 401."""
    table = generation(request).keys
    if not table:
        return None
    presented = bearer_token(request)
    if presented is None:
        raise _missing_key()
    key = table.find(presented)
    if key is None:
        raise _invalid_key()
    return key


def authorize(request: web.Request, ctx: RequestContext, key: ClientKey | None) -> None:
    """Puts the key and the limit backend that counts its budgets on the context; a model outside the
    key's allow-list is a 403."""
    ctx.client = key
    if key is None:
        return
    ctx.settings["ratelimit"] = generation(request).limiter
    table = generation(request).keys
    if ctx.requested_model in generation(request).config.routes and table.allows(key, ctx.requested_model):
        return  # a route allowed by name: the operator chose its targets, so every one of them is allowed
    # Anything else is checked against the targets that would serve it, never the string the client wrote
    # (which may look like an allowed '<provider>/*' and be served by another provider); and only the allowed
    # targets stay, so that a fallback never reaches a model the key may not use.
    allowed = [(p, m) for p, m in ctx.candidates if table.allows(key, f"{p.name}/{m}")]
    if not allowed:
        raise GatewayError(403, f"key '{key.id}' may not use the model '{ctx.requested_model}'",
                           type="permission_error", param="model", code="model_not_allowed")
    ctx.candidates = allowed
    ctx.provider, ctx.model = allowed[0]


def allowed_models(request: web.Request, key: ClientKey | None, models: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """GET /models for a key: only what its allow-list lets it call."""
    if key is None:
        return models
    table = generation(request).keys
    return [(model, owner) for model, owner in models if table.allows(key, model)]
