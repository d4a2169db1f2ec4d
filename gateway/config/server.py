"""The `server` and `logging` sections: where and how the gateway listens, CORS, proxies, admin keys, log lines."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .hosts import host_problem
from .loader import SHA256_HEX, Validator
from .model import LOG_FORMATS, LOG_LEVELS, CorsConfig, IPNetwork, LoggingConfig, ServerConfig

_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$", re.IGNORECASE)


def parse_server(v: Validator, raw: Any) -> ServerConfig:
    server = ServerConfig()
    raw_server = v.mapping(raw, "server",
                           ("host", "port", "sse_keepalive", "max_body_bytes", "shutdown_grace", "request_timeout",
                            "send_timeout", "cors", "playground", "trusted_proxies", "admin_keys"))
    if "host" in raw_server and v.string(raw_server["host"], "server.host"):
        problem = host_problem(raw_server["host"])
        if problem:
            v.ld.problem("server.host", problem)
        else:
            server.host = raw_server["host"]
    if "port" in raw_server:
        port = v.number(raw_server["port"], "server.port", 0, integer=True, exclusive=False)
        if port is not None and port > 65535:
            v.ld.problem("server.port", "must be at most 65535")
        elif port is not None:
            server.port = port
    for key in ("sse_keepalive", "max_body_bytes", "shutdown_grace", "request_timeout", "send_timeout"):
        if key in raw_server:
            number = v.number(raw_server[key], f"server.{key}", integer=key == "max_body_bytes")
            if number is not None:
                setattr(server, key, number)
    if "cors" in raw_server:
        server.cors = _cors(v, raw_server["cors"], "server.cors")
    if "playground" in raw_server:
        if isinstance(raw_server["playground"], bool):
            server.playground = raw_server["playground"]
        else:
            v.ld.problem("server.playground", "must be true or false")
    if "trusted_proxies" in raw_server:
        server.trusted_proxies = _trusted_proxies(v, raw_server["trusted_proxies"], "server.trusted_proxies")
    if "admin_keys" in raw_server:
        server.admin_keys = _admin_keys(v, raw_server["admin_keys"])
    return server


def _cors(v: Validator, raw: Any, path: str) -> CorsConfig | None:
    raw = v.mapping(raw, path, ("origins", "max_age"), ("origins",))
    origins = raw.get("origins")
    if "origins" in raw and (not isinstance(origins, list) or not origins):
        v.ld.problem(f"{path}.origins", "must be a non-empty list of origins such as 'http://localhost:5173'")
        origins = None
    cleaned: list[str] = []
    for i, origin in enumerate(origins or ()):
        where = f"{path}.origins[{i}]"
        if not isinstance(origin, str):
            v.ld.problem(where, "must be a string such as 'http://localhost:5173'")
        elif origin != "*" and not _ORIGIN.match(origin):
            hint = " (an origin has no path: drop the trailing '/')" if origin.endswith("/") else ""
            v.ld.problem(where, f"must be '*' or scheme://host[:port] with http or https{hint}")
        else:
            cleaned.append(origin.lower())  # browsers send the scheme and host in lowercase
    max_age = CorsConfig.max_age
    if "max_age" in raw:
        number = v.number(raw["max_age"], f"{path}.max_age", integer=True, exclusive=False)
        max_age = number if number is not None else max_age
    if not cleaned or len(cleaned) != len(origins or ()):
        return None
    return CorsConfig(origins=tuple(cleaned), max_age=max_age)


def _trusted_proxies(v: Validator, raw: Any, path: str) -> tuple[IPNetwork, ...]:
    if not isinstance(raw, list):
        v.ld.problem(path, "must be a list of addresses or CIDRs such as 127.0.0.1 or 10.0.0.0/8")
        return ServerConfig.trusted_proxies
    networks = []
    for i, item in enumerate(raw):
        try:
            networks.append(ipaddress.ip_network(item.strip("[]") if isinstance(item, str) else "", strict=False))
        except ValueError:
            v.ld.problem(f"{path}[{i}]", "must be an IP address or a CIDR such as 10.0.0.0/8")
    return tuple(networks)


def _admin_keys(v: Validator, raw: Any) -> frozenset[str]:
    if not isinstance(raw, list):
        v.ld.problem("server.admin_keys", "must be a list of sha256 hex digests (gateway hash-key prints one)")
        return frozenset()
    digests = set()
    for i, digest in enumerate(raw):
        if isinstance(digest, str) and SHA256_HEX.match(digest):
            digests.add(digest.lower())
        else:
            v.ld.problem(f"server.admin_keys[{i}]",
                         "must be the 64 hex digits of the key's SHA-256 (gateway hash-key prints it)")
    return frozenset(digests)


def parse_logging(v: Validator, raw: Any) -> LoggingConfig:
    raw = v.mapping(raw, "logging", ("level", "format"))
    level = raw.get("level", LoggingConfig.level)
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        v.ld.problem("logging.level", f"must be one of {', '.join(LOG_LEVELS)}")
        level = LoggingConfig.level
    form = raw.get("format", LoggingConfig.format)
    if form not in LOG_FORMATS:
        v.ld.problem("logging.format", f"must be one of {', '.join(LOG_FORMATS)}")
        form = LoggingConfig.format
    return LoggingConfig(level.upper(), form)
