"""One access-log line per request, whatever its fate, built here and nowhere else.

The `access_log` middleware (outermost) starts an AccessRecord for every request that reaches the app,
the completion handler fills it as the request goes, and the middleware writes it once the response is
done: one line, and the request's Prometheus samples (gateway/metrics.py), from the same record. An
`Expect: 100-continue` refused before the middlewares run writes its record itself (gateway/routes.py),
and so do a request whose headers never completed and one that is not valid HTTP (begin_unparsed,
gateway/server.py).

Fields, the same names in text (`name=value`, `-` when unknown) and JSON (null when unknown):
id (the gateway's own, unique), request_id (X-Request-Id taken when valid, else `id`; returned),
endpoint, key (the key's id, never the key), provider, model (what answered), stream, tries, outcome,
status, requested_model, client, method, path, finish_reason, first_chunk_seconds, seconds,
prompt_tokens, completion_tokens, reasoning_tokens, fallback, moderation (actions taken: input_block,
output_block, output_redact), stream_id and resume (a resumable stream's id, and how it ended: attached,
detached, abandoned, over_cap, cancelled; gateway/resume/relay.py). Client-controlled values (request_id
is checked; requested_model, path, client) are capped and, in text, escaped (gateway/logfmt.py); JSON
escapes them itself, once.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .appkeys import generation
from .config import IPNetwork
from .ids import random_id
from .logfmt import FIELD_CAP, escape
from .logsetup import ACCESS_ATTRIBUTE, plain_text_handler
from .metrics import METRICS
from .redaction import as_logged, redact_log

log = logging.getLogger("gateway.access")

CLIENT_DISCONNECTED = "client_disconnected"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away before the answer
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: logged at DEBUG, not INFO
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# what JSON does not escape but a terminal or an editor takes for a line break or a change of direction
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@dataclass(slots=True)
class AccessRecord:
    own_id: str
    request_id: str
    client: str
    method: str
    path: str
    started: float  # time.monotonic()
    endpoint: str = "-"
    key: str | None = None
    requested_model: str | None = None
    provider: str | None = None
    model: str | None = None
    stream: bool | None = None
    status: int = 0
    outcome: str | None = None
    finish_reason: str | None = None
    first_chunk: float | None = None  # seconds from the start to the first chunk sent
    seconds: float = 0.0
    tries: int = 0
    retries: int = 0
    fallback: bool = False
    usage: dict[str, Any] | None = None
    moderation: list[str] = field(default_factory=list)
    chunks_in: int = 0  # chunks from the provider into the middleware chain
    upstream_first_bytes: list[tuple[str, float]] = field(default_factory=list)  # (provider, seconds) per try
    chunks_out: int = 0  # chunks written to the client
    keepalives: int = 0
    stream_id: str | None = None  # a resumable stream's id (never its token)
    resume: str | None = None  # how a resumable stream ended, for its owner's line

    def tokens(self, name: str) -> int | None:
        usage = self.usage
        if not usage:
            return None
        if name == "reasoning_tokens":
            usage = usage.get("completion_tokens_details") or {}
        value = usage.get(name) if isinstance(usage, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def fields(self) -> dict[str, object]:
        """The line's fields with raw values (capped): for JSON, and, escaped, for text."""
        return {
            "id": self.own_id, "request_id": self.request_id, "endpoint": self.endpoint, "key": self.key,
            "provider": self.provider, "model": self.model, "stream": self.stream, "tries": self.tries,
            "outcome": self.outcome, "status": self.status, "requested_model": self.requested_model,
            "client": self.client, "method": self.method, "path": self.path, "finish_reason": self.finish_reason,
            "first_chunk_seconds": None if self.first_chunk is None else round(self.first_chunk, 3),
            "seconds": round(self.seconds, 3), "prompt_tokens": self.tokens("prompt_tokens"),
            "completion_tokens": self.tokens("completion_tokens"),
            "reasoning_tokens": self.tokens("reasoning_tokens"), "fallback": self.fallback,
            "moderation": list(self.moderation), "stream_id": self.stream_id, "resume": self.resume,
        }


ACCESS = web.RequestKey("access", AccessRecord)


def client_address(request: web.BaseRequest, trusted: tuple[IPNetwork, ...]) -> str:
    """The peer; or, when the peer is a trusted proxy, the client it names: the right-most address of
    X-Forwarded-For that is not itself a trusted proxy, else X-Real-IP."""
    peer = request.remote or "-"
    if not _trusted(peer, trusted):
        return peer
    header = request.headers.get("X-Forwarded-For")
    if not header:  # a proxy on this host, or one that names the client in X-Real-IP only
        return request.headers.get("X-Real-IP", "").strip() or peer
    forwarded = [part.strip() for part in header.split(",") if part.strip()]
    for address in reversed(forwarded):
        if not _trusted(address, trusted):
            return address
    return request.headers.get("X-Real-IP", "").strip() or (forwarded[0] if forwarded else peer)


# address -> trusted, per trusted_proxies tuple (held, so that its id is not reused): the same few peers
# (nginx, loopback) ask on every request, and an lru_cache keyed by the tuple would hash every network in it
_TRUST_CACHES: dict[int, tuple[tuple[IPNetwork, ...], dict[str, bool]]] = {}
_TRUST_CACHE_SIZE = 1024


def _trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    cache = _TRUST_CACHES.get(id(trusted))
    if cache is None or cache[0] is not trusted:
        if len(_TRUST_CACHES) >= 8:  # one per configuration loaded: reloads made the others
            _TRUST_CACHES.clear()
        cache = _TRUST_CACHES[id(trusted)] = (trusted, {})
    known = cache[1]
    found = known.get(address)
    if found is None:
        found = _in_networks(address, trusted)
        if len(known) < _TRUST_CACHE_SIZE:
            known[address] = found
    return found


def _in_networks(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def begin(request: web.Request) -> AccessRecord:
    """The request's record, started on first use."""
    record = request.get(ACCESS)
    if record is None:
        record = start(request)
    return record


def start(request: web.Request) -> AccessRecord:
    """A new record for the request (the access_log middleware's: no record exists before it runs)."""
    own_id = random_id()  # unique per request, whatever id the client sent
    given = request.headers.get("X-Request-Id")
    record = request[ACCESS] = AccessRecord(
        own_id=own_id, request_id=given if given and _REQUEST_ID.match(given) else own_id,
        client=client_address(request, generation(request).config.server.trusted_proxies)[:FIELD_CAP],
        method=request.method[:20], path=request.path[:FIELD_CAP], started=time.monotonic())
    return record


def begin_unparsed(peer: str, started: float) -> AccessRecord:
    """The record of a request that never reached the app (its headers did not complete, or did not
    parse): only the peer is known; no endpoint, method or path, and no request id but the gateway's own."""
    own_id = random_id()
    return AccessRecord(own_id=own_id, request_id=own_id, client=peer[:FIELD_CAP], method="-", path="-",
                        started=started)


def finish(app: web.Application, record: AccessRecord, quiet: bool = False) -> None:
    """The request is done: its line (at DEBUG for probes, scrapes and when `quiet`), and its samples."""
    record.seconds = time.monotonic() - record.started
    if record.outcome is None:
        record.outcome = "ok" if record.status < 400 else f"http_{record.status}"
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.observe(record)
    level = logging.DEBUG if quiet or (record.path in QUIET_PATHS and record.status < 400) else logging.INFO
    if not log.isEnabledFor(level):
        return
    line = record_line(record)
    plain = plain_text_handler(log, level)
    logged = as_logged(line) if plain is not None else None
    if plain is not None and logged is not None:  # the usual case: the text line, without a LogRecord
        handler, formatter = plain
        handler.write_line(formatter.line(time.time(), logging.getLevelName(level), log.name, logged))
        return
    # The JSON form is made only by the JSON formatter, when there is one. The record is made here rather
    # than by log.log, whose search of the stack for the caller's file and line no formatter of the
    # gateway's prints. The line is the message itself, without arguments: nothing to %-format.
    made = log.makeRecord(log.name, level, __file__, 0, line, (), None, "finish",
                          {ACCESS_ATTRIBUTE: functools.partial(_record_json, record)})
    log.handle(made)


def record_line(r: AccessRecord) -> str:
    """text_line(r.fields()), written out field by field (a request's line is on its path): the numbers and
    flags, and the ids the gateway made or checked, are written as they are; the rest through _text."""
    t = _text
    usage = r.usage
    if usage:
        prompt, completion, reasoning = (t(r.tokens("prompt_tokens")), t(r.tokens("completion_tokens")),
                                         t(r.tokens("reasoning_tokens")))
    else:
        prompt = completion = reasoning = "-"
    first = "-" if r.first_chunk is None else str(round(r.first_chunk, 3))
    stream = "-" if r.stream is None else str(r.stream)
    return (f"request id={r.own_id} request_id={r.request_id} {r.endpoint} key={t(r.key)} provider={t(r.provider)} "
            f"model={t(r.model)} stream={stream} tries={r.tries!s} outcome={t(r.outcome)} status={r.status!s} "
            f"requested_model={t(r.requested_model)} client={t(r.client)} method={t(r.method)} path={t(r.path)} "
            f"finish_reason={t(r.finish_reason)} first_chunk_seconds={first} seconds={round(r.seconds, 3)!s} "
            f"prompt_tokens={prompt} completion_tokens={completion} reasoning_tokens={reasoning} "
            f"fallback={r.fallback!s} moderation={t(r.moderation) if r.moderation else '-'} "
            f"stream_id={'-' if r.stream_id is None else t(r.stream_id)} "
            f"resume={'-' if r.resume is None else t(r.resume)}")


def text_line(fields: dict[str, object]) -> str:
    head = f"request id={fields['id']} request_id={fields['request_id']} {fields['endpoint']}"
    rest = " ".join(f"{name}={_text(value)}" for name, value in fields.items()
                    if name not in ("id", "request_id", "endpoint"))
    return f"{head} {rest}"


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        # most values hold nothing to escape: then escape() would return them as they are
        return value if len(value) <= FIELD_CAP and value.isprintable() and "\\" not in value else escape(value)
    if isinstance(value, list):
        return ",".join(escape(item) for item in value) or "-"
    return str(value)


def _record_json(record: AccessRecord) -> dict[str, object]:
    return _json_fields(record.fields())


def _json_fields(fields: dict[str, object]) -> dict[str, object]:
    """The fields as JSON gets them: secrets redacted (this dict does not go through the record factory)."""
    return {name: _json_safe(value) if isinstance(value, str) else value for name, value in fields.items()}


def _json_safe(value: str) -> str:
    return _JSON_UNSAFE.sub("\ufffd", redact_log(value))


@web.middleware
async def access_log(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    record = start(request)  # an Expect refused before the middlewares made its own, and answered
    try:
        response = await handler(request)
    except asyncio.CancelledError:  # the client went away and aiohttp cancelled the handler
        record.status = record.status or CLIENT_CLOSED_REQUEST
        record.outcome = record.outcome or CLIENT_DISCONNECTED
        finish(request.app, record)
        raise
    except web.HTTPException as exc:  # a redirect (errors are answered by openai_errors, inside)
        record.status = exc.status
        finish(request.app, record)
        raise
    except BaseException:
        record.status, record.outcome = 500, record.outcome or "internal_error"
        finish(request.app, record)
        raise
    record.status = record.status or response.status
    if record.endpoint == "-" and request.match_info.route.resource is not None:  # a route's own path: bounded
        record.endpoint = request.match_info.route.resource.canonical
    if not response.prepared:
        response.headers.setdefault("x-request-id", record.request_id)
    finish(request.app, record)
    return response
