"""OpenAI-style errors: one exception type that knows its HTTP status and its JSON body."""

from __future__ import annotations

import orjson

from .redaction import redact, redact_configured  # noqa: F401 - redact: providers' text shown to clients


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
        # The last guard: no configured secret leaves in an error, whichever path built the message.
        return {"error": {"message": redact_configured(self.message), "type": self.type, "param": self.param,
                          "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def invalid_param(param: str | None, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


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
