"""Secrets out of every response, error and log line.

A configured secret is: a provider's api_key; the value of a provider header whose name says it is a
credential (authorization, api-key, x-auth-token, cookie...: any length) or whose value is read from a
`${VAR}` (then when it has MIN_SECRET_CHARS characters or more), and the token after a scheme such as
`Bearer `; the userinfo of a URL (a provider's base_url, limits.url, moderation.service.url: the
password, the user when there is no password or it is long, and the Basic credentials aiohttp makes of
them), and in those URLs the value of a query parameter named like a credential. On top of those, text
shaped like a key (sk-..., AIza..., Bearer ..., Basic ...) and the value of a credential header written
out (`Authorization: ...`, as aiohttp logs a request line it refused) are redacted too. A value shorter
than SHORTEST_SECRET is never searched for: it would garble every message, and guards nothing.

Every running application registers its configured secrets here (`redacting_logs`, from create_app):
error bodies sent to clients are redacted against them, and a log record factory redacts them, and key
shapes, from every log record's message, exception text and stack of every logger (aiohttp's too), as
the record is made, so that no handler or formatter ever sees them. A record factory rather than a
logging.Filter: a filter sees only the records of the logger or handler it is attached to, and misses
handlers added later. The factory is removed when the last application stops.
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

if TYPE_CHECKING:
    from aiohttp import web

    from .config import Config

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 8  # shorter values from a variable (a region, a flag) are configuration, not secrets
SHORTEST_SECRET = 4
_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|passw|cookie|session|signature|credential", re.IGNORECASE)
_KEY_SHAPES = (r"sk-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{20,}|gsk_[A-Za-z0-9]{10,}|nvapi-[A-Za-z0-9_\-]{10,}"
               r"|pplx-[A-Za-z0-9]{10,}|Bearer(?:\s|\\x[0-9a-fA-F]{2})+\S+"  # also a repr'd bad byte: Bearer\x01key
               # base64 credentials; a digit, + / =, or an inner capital tells them from "Basic authentication"
               r"|Basic\s+(?=[A-Za-z0-9+/]*(?:[0-9+/=]|(?<=[A-Za-z0-9+/])[A-Z]))[A-Za-z0-9+/]{8,}={0,2}")
KEY_SHAPES = re.compile(_KEY_SHAPES)
# Text from a provider may also hold a key in a URL's query (Gemini's ?key=).
_CLIENT_KEY_SHAPES = re.compile(_KEY_SHAPES + r"|key=[^&\s\"']+")
# A credential header written out ("Authorization: <value>", as aiohttp shows a request line it refused):
# the value up to the end of the line, a quote or a ';'.
_CREDENTIAL_HEADER_LINE = re.compile(
    r"(?<![A-Za-z0-9-])((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key|cookie)"
    r"(\s*:|\\x[0-9a-fA-F]{2})[^'\";\r\n]*", re.IGNORECASE)


# What text must hold for KEY_SHAPES or _CREDENTIAL_HEADER_LINE to match in it: each alternative begins
# with one of these words (KEY_SHAPES' as written; the header names', in lower case, of ASCII text, where
# IGNORECASE folds ASCII letters only). Text without any is left as it is, with no regex pass: a log line
# almost never holds one.
_SHAPE_WORDS = ("sk-", "AIza", "gsk_", "nvapi-", "pplx-", "Bearer", "Basic")
_HEADER_WORDS = ("authorization", "api-key", "cookie")


def _may_hold_shape(text: str) -> bool:
    if not text.isascii():
        return True  # IGNORECASE folds some other letters to ASCII ones (K, the Kelvin sign, to k): the regexes decide
    # _SHAPE_WORDS and _HEADER_WORDS written out: every log line is searched, and any() over a generator
    # costs more than the searches
    if ("sk-" in text or "AIza" in text or "gsk_" in text or "nvapi-" in text or "pplx-" in text
            or "Bearer" in text or "Basic" in text):
        return True
    lower = text.lower()
    return "authorization" in lower or "api-key" in lower or "cookie" in lower


def _shapes(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(REDACTED, _CREDENTIAL_HEADER_LINE.sub(rf"\1\2 {REDACTED}", text))


def header_secrets(name: str, value: str, from_env: bool = False) -> list[str]:
    """The secrets in one configured header."""
    if not value or not (_CREDENTIAL_NAME.search(name) or (from_env and len(value) >= MIN_SECRET_CHARS)):
        return []
    found = [value]
    _scheme, space, token = value.partition(" ")
    if space and token.strip():
        found.append(token.strip())  # "Bearer <token>": the token is echoed alone as often
    return found


def url_secrets(url: str) -> list[str]:
    """The credentials written in a URL: its userinfo, and query values named like a credential."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at and userinfo:
        user, _, password = userinfo.partition(":")
        found.append(userinfo)
        if password:
            found += [password, unquote(password)]
        if user and (not password or len(user) >= MIN_SECRET_CHARS):
            found += [user, unquote(user)]
        basic = f"{unquote(user)}:{unquote(password)}"
        for encoding in ("latin-1", "utf-8"):  # aiohttp's BasicAuth encodes latin-1
            try:
                found.append(base64.b64encode(basic.encode(encoding)).decode("ascii"))
            except UnicodeEncodeError:
                pass
    for name, value in parse_qsl(parts.query):
        if value and _CREDENTIAL_NAME.search(name):
            found.append(value)
    return found


def configured_secrets(config: Config) -> tuple[str, ...]:
    """Every secret a configuration holds."""
    found: list[str] = []
    for provider in config.providers.values():
        found += provider.secrets
    if config.limits.backend == "redis":
        found += url_secrets(config.limits.url)
    if config.resume.backend == "redis":
        found += url_secrets(config.resume.url)
    if config.moderation.service is not None:
        found += url_secrets(config.moderation.service.url)
    return tuple(dict.fromkeys(s for s in found if s))


_FEW_SECRETS = 32  # up to this many configured secrets, text is searched for each before the regex runs


class _Registry:
    """The secrets of every running application, as one pattern (longest first, so that a secret that
    contains another is redacted whole)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[int, tuple[str, ...]] = {}
        self._numbers = itertools.count()
        self.pattern: re.Pattern[str] | None = None
        self.secrets: tuple[str, ...] = ()  # the pattern's, when few enough to look for one by one first

    def add(self, secrets: Iterable[str]) -> int:
        with self._lock:
            number = next(self._numbers)
            self._sets[number] = tuple(secrets)
            self._compile()
            return number

    def remove(self, number: int) -> bool:
        """True when no application is left."""
        with self._lock:
            self._sets.pop(number, None)
            self._compile()
            return not self._sets

    def _compile(self) -> None:
        secrets = sorted({s for group in self._sets.values() for s in group if len(s) >= SHORTEST_SECRET},
                         key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, secrets))) if secrets else None
        self.secrets = tuple(secrets) if len(secrets) <= _FEW_SECRETS else ()

    def redact(self, text: str) -> str:
        pattern = self.pattern
        if pattern is None:
            return text
        secrets = self.secrets
        if secrets and not any(secret in text for secret in secrets):  # a substring search is cheaper than a regex pass
            return text
        return pattern.sub(REDACTED, text)


CONFIGURED = _Registry()


def redact_configured(text: str) -> str:
    """Only the configured secrets: for the gateway's own messages, which may say 'Bearer <key>'."""
    return CONFIGURED.redact(text)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Removes known secrets and anything shaped like an API key from a provider's text shown to clients."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= SHORTEST_SECRET:
            text = text.replace(secret, REDACTED)
    return _shapes(_CLIENT_KEY_SHAPES, CONFIGURED.redact(text))


def redact_log(text: str) -> str:
    """The configured secrets and key shapes ('key=' is left alone: the request line logs 'key=<key id>')."""
    text = CONFIGURED.redact(text)
    return _shapes(KEY_SHAPES, text) if _may_hold_shape(text) else text


# ---------------------------------------------------------------------------------------------- logs

_FORMATTER = logging.Formatter()
_previous_factory: Callable[..., logging.LogRecord] | None = None


def _scrub(record: logging.LogRecord) -> None:
    message = record.getMessage()
    clean = redact_log(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[0] is not None:
        text = _FORMATTER.formatException(record.exc_info)
        clean = redact_log(text)
        if clean != text:  # formatters print exc_text; without exc_info none can format the original
            record.exc_text, record.exc_info = clean, None
    if record.stack_info:
        record.stack_info = redact_log(record.stack_info)


def _redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _previous_factory is not None
    record = _previous_factory(*args, **kwargs)
    try:
        _scrub(record)
    except Exception:  # noqa: BLE001 - bad format arguments: the handler reports them as usual
        pass
    return record


def as_logged(text: str) -> str | None:
    """`text` as a log record made now would carry it (ours redacts it, logging's own does not); None
    when another factory is installed, whose work a line written without a record would skip."""
    factory = logging.getLogRecordFactory()
    if factory is _redacted_record and _previous_factory is logging.LogRecord:
        return redact_log(text)
    return text if factory is logging.LogRecord else None


def _install(secrets: tuple[str, ...]) -> int:
    global _previous_factory
    number = CONFIGURED.add(secrets)
    if _previous_factory is None:  # not in the chain yet
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_redacted_record)
    return number


def _uninstall(number: int) -> None:
    global _previous_factory
    if CONFIGURED.remove(number) and logging.getLogRecordFactory() is _redacted_record:
        assert _previous_factory is not None
        logging.setLogRecordFactory(_previous_factory)
        _previous_factory = None
    # else: another application still runs, or a factory was set on top of ours: ours stays in the chain


def redacting_logs(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the configuration's secrets are redacted while the application runs."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        number = _install(configured_secrets(config))
        try:
            yield
        finally:
            _uninstall(number)

    return context
