"""OpenAI-style errors: one exception type that knows its HTTP status, its JSON body, and its retry rule.

Where an error is made, it says whether another try may help (`retry`) and whether it is the
provider's fault (`counts_against_health`); gateway/failover.py reads those, never the code string.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import orjson

from .redaction import redact_configured

# What another try may do for a request that failed with this error:
# "same": a new try at the same target may answer (after a backoff), then the next target;
# "next": this target will fail the same way, another may not; "never": the request itself is at fault.
Retry = Literal["same", "next", "never"]


class GatewayError(Exception):
    """An error the client sees as `{"error": {message, type, param, code}}` with `status`.

    Read-only once made: a changed message is a new error (`with_message`), so that an error shared
    between requests or kept by a caller never changes under it.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry: Retry = "never",
        counts_against_health: bool = False,
    ) -> None:
        super().__init__(message)
        self._status = status
        self._message = message
        self._type = type
        self._code = code
        self._param = param
        self._headers: Mapping[str, str] = MappingProxyType(dict(headers or {}))
        self._retry: Retry = retry
        self._counts_against_health = counts_against_health

    @property
    def status(self) -> int:
        return self._status

    @property
    def message(self) -> str:
        return self._message

    @property
    def type(self) -> str:
        return self._type

    @property
    def code(self) -> str | None:
        return self._code

    @property
    def param(self) -> str | None:
        return self._param

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def retry(self) -> Retry:
        return self._retry

    @property
    def counts_against_health(self) -> bool:
        """The provider failed (not the request): the failure counts toward its cooldown."""
        return self._counts_against_health

    def with_message(self, message: str) -> GatewayError:
        """The same error with another message."""
        return GatewayError(self._status, message, type=self._type, code=self._code, param=self._param,
                            headers=self._headers, retry=self._retry,
                            counts_against_health=self._counts_against_health)

    def to_dict(self) -> dict[str, Any]:
        # The last guard: no configured secret leaves in an error, whichever path built the message.
        return {"error": {"message": redact_configured(self.message), "type": self.type, "param": self.param,
                          "code": self.code}}

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def invalid_param(param: str | None, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


# Upstream failures, each with its own client-facing code and its retry rule. `provider` is its name.
def _provider_failed(status: int, message: str, code: str, *, retry: Retry = "same", type: str = "upstream_error",
                     headers: Mapping[str, str] | None = None) -> GatewayError:
    return GatewayError(status, message, type=type, code=code, headers=headers, retry=retry,
                        counts_against_health=True)


def upstream_timeout(provider: str, which: str) -> GatewayError:
    return _provider_failed(504, f"provider '{provider}' timed out ({which} timeout)", f"upstream_{which}_timeout",
                            type="timeout_error")


def upstream_silence_timeout(provider: str, max_silence: float) -> GatewayError:
    return _provider_failed(504, f"provider '{provider}' sent no event for {max_silence:g} s "
                            "(comments do not count: timeouts.max_silence)", "upstream_silence_timeout",
                            type="timeout_error")


def upstream_unreachable(provider: str, detail: str) -> GatewayError:
    return _provider_failed(502, f"provider '{provider}' could not be reached: {detail}", "upstream_unreachable")


def upstream_reset(provider: str) -> GatewayError:
    return _provider_failed(502, f"provider '{provider}' closed the connection mid-response", "upstream_reset")


def upstream_truncated(provider: str) -> GatewayError:
    return _provider_failed(
        502,
        f"provider '{provider}' ended the stream before it finished (no finish reason): the answer is incomplete",
        "upstream_truncated",
    )


def upstream_bad_stream(provider: str, detail: str) -> GatewayError:
    return _provider_failed(502, f"provider '{provider}' sent an invalid stream: {detail}", "upstream_bad_stream")


def upstream_malformed(provider: str) -> GatewayError:
    return _provider_failed(502, f"provider '{provider}' sent a malformed event (on_malformed: error)",
                            "upstream_malformed")


def upstream_stream_error(provider: str, message: str) -> GatewayError:
    """An error event inside a 200 stream that carries no HTTP status."""
    return _provider_failed(502, f"provider '{provider}' sent an error in its stream: {message}",
                            "upstream_stream_error")


# The classes of a provider's HTTP error status (gateway/upstream.py's http_error picks one).
def upstream_rate_limited(provider: str, message: str, headers: Mapping[str, str]) -> GatewayError:
    """429: kept as a 429, with the provider's retry-after headers; worth a try after the wait."""
    return _provider_failed(429, f"provider '{provider}' is rate limiting: {message}", "upstream_rate_limited",
                            type="rate_limit_error", headers=headers)


def upstream_auth_failed(provider: str, status: int, variables: str) -> GatewayError:
    """401/403: the gateway's own key is wrong; the same key fails again, another provider may answer."""
    return _provider_failed(502, f"provider '{provider}' refused the gateway's credentials (HTTP {status}): "
                            f"check {variables}", "upstream_auth_failed", retry="next")


def upstream_not_found(provider: str, message: str) -> GatewayError:
    """404: a wrong model name or path, not a sick provider; another target may know the model."""
    return GatewayError(404, f"provider '{provider}' answered not found: {message}", code="upstream_not_found",
                        retry="next")


def upstream_bad_request(provider: str, message: str) -> GatewayError:
    """Another 4xx: the request is at fault, and would be refused again."""
    return GatewayError(400, f"provider '{provider}' rejected the request: {message}", code="upstream_bad_request")


def upstream_failed(provider: str, status: int, detail: str, headers: Mapping[str, str]) -> GatewayError:
    """5xx (and anything unexpected): a 502, worth another try."""
    return _provider_failed(502, f"provider '{provider}' failed with HTTP {status}{detail}", "upstream_error",
                            headers=headers)


def upstream_redirect(provider: str, status: int, shown: str) -> GatewayError:
    """3xx: not followed; the same base_url redirects again, another provider may not."""
    return _provider_failed(502, f"provider '{provider}' answered a redirect (HTTP {status}){shown}; "
                            "the gateway does not follow redirects for provider calls: check its base_url",
                            "upstream_redirect", retry="next")
