"""OpenAI-style errors: one exception type that knows its HTTP status and its JSON body."""

from __future__ import annotations

import re

import orjson

# Key-looking tokens that providers sometimes echo back in their error text.
_SECRET_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{20,}|gsk_[A-Za-z0-9]{10,}|nvapi-[A-Za-z0-9_\-]{10,}"
    r"|pplx-[A-Za-z0-9]{10,}|Bearer\s+\S+|key=[^&\s\"']+)"
)


class GatewayError(Exception):
    """An error the client sees as `{"error": {message, type, param, code}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def to_dict(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def invalid_param(param: str | None, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Removes known secrets and anything shaped like an API key from text shown to clients or logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _SECRET_PATTERNS.sub("[redacted]", text)


# Upstream failures that ended a stream, each with its own client-facing code.
def upstream_timeout(provider: str, which: str) -> GatewayError:
    return GatewayError(
        504,
        f"provider '{provider}' timed out ({which} timeout)",
        type="timeout_error",
        code=f"upstream_{which}_timeout",
    )


def upstream_unreachable(provider: str, detail: str) -> GatewayError:
    return GatewayError(
        502, f"provider '{provider}' could not be reached: {detail}", type="upstream_error", code="upstream_unreachable"
    )


def upstream_reset(provider: str) -> GatewayError:
    return GatewayError(
        502, f"provider '{provider}' closed the connection mid-response", type="upstream_error", code="upstream_reset"
    )


def upstream_truncated(provider: str) -> GatewayError:
    return GatewayError(
        502,
        f"provider '{provider}' ended the stream before it finished (no finish reason): the answer is incomplete",
        type="upstream_error",
        code="upstream_truncated",
    )


def upstream_bad_stream(provider: str, detail: str) -> GatewayError:
    return GatewayError(
        502, f"provider '{provider}' sent an invalid stream: {detail}", type="upstream_error", code="upstream_bad_stream"
    )


def upstream_malformed(provider: str) -> GatewayError:
    return GatewayError(
        502, f"provider '{provider}' sent a malformed event (on_malformed: error)", type="upstream_error",
        code="upstream_malformed"
    )
