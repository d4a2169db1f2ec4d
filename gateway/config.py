"""providers.yaml: loading, `${VAR}` expansion, validation with each problem's place (key path, line)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from .moderation_config import ModerationConfig
from .redaction import header_secrets, url_secrets

DEFAULT_CONFIG = Path(__file__).resolve().parent / "providers.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# fields whose parser expands `${VAR}` itself: an unset variable there disables the provider (or is worded
# without echoing a secret), it is not a load problem
_EXPANDS_ITSELF = re.compile(r"^(providers\[\d+\]\.(base_url|api_key|headers\..+)|limits\.url|resume\.url)$")
_PARENT = re.compile(r"(\.[^.\[]*|\[\d+\])$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_ORIGIN = re.compile(r"^https?://([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$", re.IGNORECASE)
LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "concurrent_streams")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 120.0
    idle: float = 60.0
    total: float = 600.0
    max_silence: float = 300.0  # seconds without an event; comments (": ping") do not count


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 2  # every try counts, the first included
    backoff_initial: float = 0.5  # seconds before the second try; doubles after each
    backoff_max: float = 4.0
    retry_after_max: float = 5.0  # a provider's longer retry-after moves on to the next target at once


@dataclass(frozen=True)
class HealthPolicy:
    max_failures: int = 5  # consecutive failures before the provider is skipped; 0 never skips it
    cooldown: float = 10.0  # seconds it is skipped for


@dataclass
class ProviderConfig:
    name: str
    kind: str
    base_url: str = ""
    api_key: str | None = None
    models: tuple[str, ...] | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: dict[str, str] = field(default_factory=dict)
    # kind options (the adapters declare which kind takes each: gateway/providers/*.py `options`)
    stream_options: bool = True  # send stream_options.include_usage upstream (openai kind)
    max_event_bytes: int = 1 << 20
    token_interval: float = 0.03  # demo kind: seconds between tokens
    standby: bool = False  # demo kind: serves only when no real provider is enabled, or when named
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    on_malformed: str = "skip"  # skip | error: what a malformed event in the stream does
    missing_env: tuple[str, ...] = ()  # variables that were unset: the provider is disabled
    key_vars: tuple[str, ...] = ()  # the variables api_key is read from, named in errors
    env_headers: tuple[str, ...] = ()  # the headers whose value is read from a variable

    @property
    def enabled(self) -> bool:
        return not self.missing_env

    @property
    def secrets(self) -> tuple[str, ...]:
        """What is never shown: the api_key, secret header values, the base_url's credentials
        (gateway/redaction.py says which)."""
        found = [self.api_key] if self.api_key else []
        for name, value in self.headers.items():
            found += header_secrets(name, value, name in self.env_headers)
        found += url_secrets(self.base_url)
        return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class CorsConfig:
    """Browsers on these origins may call the gateway; "*" echoes any origin."""
    origins: tuple[str, ...]
    max_age: int = 600  # seconds a browser may cache a preflight's answer (Chromium caps it at 7200)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"  # `gateway serve --log-level` overrides it
    format: str = "text"  # text | json: one JSON object per line (gateway/logsetup.py names the fields)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    sse_keepalive: float = 15.0
    max_body_bytes: int = 4 << 20
    shutdown_grace: float = 30.0
    request_timeout: float = 30.0  # seconds for a request's headers to arrive, and again for its body
    send_timeout: float = 30.0  # seconds a stream write may wait on a client that does not read
    cors: CorsConfig | None = None  # off: no CORS header is sent, preflights get 405
    playground: bool | None = None  # None: on when serving on loopback
    # peers whose X-Forwarded-For / X-Real-IP name the client (nginx); anyone else is logged as the peer itself
    trusted_proxies: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    admin_keys: frozenset[str] = frozenset()  # sha256 hex of keys that may read /admin/health (as keys[].sha256)

    @property
    def playground_enabled(self) -> bool:
        return self.playground if self.playground is not None else is_loopback(self.host)


@dataclass(frozen=True)
class KeyLimits:
    """Per-key budgets; None: no limit of that kind."""
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_streams: int | None = None

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in LIMIT_NAMES)


@dataclass(frozen=True)
class ClientKey:
    id: str  # shown in logs, metrics and errors; the key itself never is
    sha256: str  # lowercase hex SHA-256 of the key
    models: tuple[str, ...] | None = None  # glob patterns over "<provider>/<model>" and route names
    limits: KeyLimits = KeyLimits()
    resumable: bool = False  # every stream of this key is resumable (issue 14), as if it asked for it
    coalesce_ms: int | None = None  # default stream_options.coalesce_ms for this key's streams


@dataclass(frozen=True)
class LimitsConfig:
    backend: str = "memory"  # memory | redis
    url: str = "redis://127.0.0.1:6379/0"
    on_backend_error: str = "open"  # open: admit without limits while the backend fails; closed: 503
    redis_pool_size: int = 50  # connections to Redis per instance; a burst beyond them waits for one
    redis_pool_wait: float = 2.0  # seconds a request waits for a connection before a 503 limits_busy


@dataclass(frozen=True)
class ResumeConfig:
    """Resumable streams: where their events are kept while the client may come back."""
    backend: str = "memory"  # memory (one instance) | redis (any instance can resume)
    url: str = "redis://127.0.0.1:6379/0"  # redis only
    grace: float = 30.0  # seconds the upstream is kept reading after the client left
    max_bytes: int = 1_048_576  # per stream; past it the stream is no longer resumable
    max_total_bytes: int = 268_435_456  # per instance


MAX_COALESCE_MS = 1000


@dataclass
class Config:
    server: ServerConfig
    providers: dict[str, ProviderConfig]
    routes: dict[str, tuple[str, ...]]
    middlewares: tuple[str, ...]
    source: str = ""
    settings: dict[str, object] = field(default_factory=dict)  # each middleware's parsed section, by its name
    auth: str | None = None  # as written: "keys" | "none"; None means keys if any are configured
    keys: tuple[ClientKey, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    resume: ResumeConfig = ResumeConfig()

    @property
    def moderation(self) -> ModerationConfig:
        """The `moderate` middleware's settings (the cli's note and the secrets to redact read them)."""
        settings = self.settings.get("moderate")
        return settings if isinstance(settings, ModerationConfig) else ModerationConfig()

    @property
    def open_access(self) -> bool:
        """No client key is asked for."""
        return not self.keys


@dataclass(frozen=True)
class Problem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Loader:
    """Turns the YAML node tree into plain values, remembering the line of every key path."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: dict[str, int] = {}
        self.problems: list[Problem] = []
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark else None
            self.problems.append(Problem("", line, f"not valid YAML: {getattr(exc, 'problem', exc)}"))
            self.data: Any = None
            return
        self._scalars = yaml.SafeLoader("")  # resolves scalar types (int, bool, null...) as safe_load does
        self.data = self._value(node, "") if node is not None else {}

    def _value(self, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = f"{path}.{key}" if path else key
                if key in out:
                    self.problems.append(Problem(child, key_node.start_mark.line + 1, "duplicate key"))
                out[key] = self._value(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" and "${" in node.value \
                and not _EXPANDS_ITSELF.match(path):
            return self._expanded(node, path)
        return self._scalars.construct_object(node, deep=True)

    def _expanded(self, node: yaml.ScalarNode, path: str) -> Any:
        """`${VAR}` in any scalar: an unset variable is a problem that names it; a plain (unquoted) value
        made of one variable takes the type its text has, so that `port: ${PORT}` is a number."""
        missing: list[str] = []
        text = _expand(node.value, missing)
        for name in dict.fromkeys(missing):
            self.problem(path, f"{name} is not set")
        if missing:
            return node.value  # unexpanded: the field's own checks then add no second problem for it
        if node.style is None and _VAR.fullmatch(node.value):
            tag = self._scalars.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]  # PyYAML stubs leave it untyped
            if tag != "tag:yaml.org,2002:str":
                return self._scalars.construct_object(yaml.ScalarNode(tag, text), deep=True)
        return text

    def problem(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        probe = path
        while line is None and probe:  # the nearest enclosing key that has a line
            parent = _PARENT.sub("", probe)
            probe = parent if parent != probe else ""
            line = self.lines.get(probe)
        self.problems.append(Problem(path, line, message))


def _expand(value: str, missing: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name: str = match.group(1)
        default: str | None = match.group(2)
        found = os.environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _VAR.sub(replace, value)


class _Validator:
    def __init__(self, loader: _Loader) -> None:
        self.ld = loader

    def mapping(self, value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.ld.problem(path, "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                self.ld.problem(f"{path}.{key}" if path else key, f"unknown key (allowed: {', '.join(allowed)})")
        for key in required:
            if key not in value:
                self.ld.problem(path, f"missing required key '{key}'")
        return value

    def number(self, value: Any, path: str, minimum: float = 0, integer: bool = False,
               exclusive: bool = True) -> Any:  # an int when integer=True, None when refused
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.ld.problem(path, f"must be {'an integer' if integer else 'a number'}")
            return None
        if value < minimum or (exclusive and value == minimum):
            self.ld.problem(path, f"must be {'greater than' if exclusive else 'at least'} {minimum}")
            return None
        return value

    def string(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.ld.problem(path, "must be a non-empty string")
            return None
        return value


Validator = _Validator  # what a middleware's section parser is given (gateway/pipeline/spec.py)


def _cors(v: _Validator, raw: Any, path: str) -> CorsConfig | None:
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


def parse_config(text: str, source: str = "<config>") -> Config:
    loader = _Loader(text, source)
    if loader.problems and loader.data is None:
        raise ConfigError(source, loader.problems)
    v = _Validator(loader)
    from .pipeline import MIDDLEWARES  # here, not at the top: the middlewares import this module

    sections = tuple(spec.section.key for spec in MIDDLEWARES.values() if spec.section is not None)
    root = v.mapping(loader.data, "", ("server", "providers", "routes", "middlewares", "auth", "keys", "limits",
                                       "logging", "resume", *sections), ("providers",))

    server = ServerConfig()
    raw_server = v.mapping(root.get("server", {}), "server",
                           ("host", "port", "sse_keepalive", "max_body_bytes", "shutdown_grace", "request_timeout",
                            "send_timeout", "cors", "playground", "trusted_proxies", "admin_keys"))
    if "host" in raw_server and v.string(raw_server["host"], "server.host"):
        problem = host_problem(raw_server["host"])
        if problem:
            loader.problem("server.host", problem)
        else:
            server.host = raw_server["host"]
    if "port" in raw_server:
        port = v.number(raw_server["port"], "server.port", 0, integer=True, exclusive=False)
        if port is not None and port > 65535:
            loader.problem("server.port", "must be at most 65535")
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
            loader.problem("server.playground", "must be true or false")
    if "trusted_proxies" in raw_server:
        server.trusted_proxies = _trusted_proxies(v, raw_server["trusted_proxies"], "server.trusted_proxies")
    if "admin_keys" in raw_server:
        server.admin_keys = _admin_keys(v, raw_server["admin_keys"])

    providers: dict[str, ProviderConfig] = {}
    raw_providers = root.get("providers", [])
    if not isinstance(raw_providers, list) or not raw_providers:
        loader.problem("providers", "must be a non-empty list")
        raw_providers = []
    for i, raw in enumerate(raw_providers):
        provider = _provider(v, raw, f"providers[{i}]")
        if provider is None:
            continue
        if provider.name in providers:
            loader.problem(f"providers[{i}].name", f"duplicate provider name '{provider.name}'")
        providers[provider.name] = provider

    routes: dict[str, tuple[str, ...]] = {}
    raw_routes = root.get("routes") or {}
    if not isinstance(raw_routes, dict):
        loader.problem("routes", "must be a mapping of route names to models")
        raw_routes = {}
    for name, targets in raw_routes.items():
        path = f"routes.{name}"
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            loader.problem(path, "must be a model name or a non-empty list of them")
            continue
        if "/" in name:
            loader.problem(path, "a route name must not contain '/' (it would shadow '<provider>/<model>')")
        for j, target in enumerate(targets):
            provider_name, slash, model = target.partition("/")
            if not slash or not model:
                loader.problem(f"{path}[{j}]", f"'{target}' must be '<provider>/<model>'")
            elif provider_name not in providers:
                loader.problem(f"{path}[{j}]", f"unknown provider '{provider_name}'")
            elif (models := providers[provider_name].models) is not None and model not in models:
                loader.problem(f"{path}[{j}]", f"model '{model}' is not in provider '{provider_name}' models")
        routes[name] = tuple(targets)

    middlewares: tuple[str, ...] = ("normalize",)
    if "middlewares" in root:
        raw_mw = root["middlewares"]
        if not isinstance(raw_mw, list) or not all(isinstance(m, str) for m in raw_mw):
            loader.problem("middlewares", "must be a list of names")
        else:
            for j, name in enumerate(raw_mw):
                if name not in MIDDLEWARES:
                    loader.problem(f"middlewares[{j}]", f"unknown middleware '{name}' (known: {', '.join(MIDDLEWARES)})")
                elif raw_mw.index(name) != j:
                    loader.problem(f"middlewares[{j}]", f"'{name}' is listed twice")
                else:
                    for before in MIDDLEWARES[name].after:
                        if before not in raw_mw:
                            loader.problem(f"middlewares[{j}]", f"'{name}' needs '{before}' before it in the list")
                        elif raw_mw.index(before) > j:
                            loader.problem(f"middlewares[{j}]", f"'{name}' must come after '{before}' (it works on "
                                           f"what '{before}' makes): move it later in the list")
            middlewares = tuple(raw_mw)

    settings: dict[str, object] = {}  # every middleware's section, listed or not (the cli notes one unused)
    for spec in MIDDLEWARES.values():
        if spec.section is not None:
            key = spec.section.key
            settings[spec.name] = spec.section.parse(v, root[key]) if key in root else spec.section.default()
    auth, keys = _auth(v, root, server, middlewares)
    limits = _limits(v, root.get("limits", {})) if "limits" in root else LimitsConfig()
    logging = _logging(v, root["logging"]) if "logging" in root else LoggingConfig()
    resume = _resume(v, root["resume"]) if "resume" in root else ResumeConfig()

    if loader.problems:
        raise ConfigError(source, loader.problems)
    return Config(server, providers, routes, middlewares, source, settings, auth, keys, limits, logging, resume)


_SHARED_PROVIDER_KEYS = ("name", "kind", "base_url", "api_key", "models", "timeouts", "headers", "max_event_bytes",
                         "retry", "health", "on_malformed")


def _adapters() -> dict[str, Any]:
    """The kinds and their options, from the one list of adapters (imported here: the adapters import
    this module's types)."""
    from .providers import ADAPTERS

    return ADAPTERS


def _kind_options(v: _Validator, raw: dict[str, Any], path: str, kind: str, provider: ProviderConfig) -> None:
    """The keys only some kinds take, checked as the adapter of each declares them."""
    adapters = _adapters()
    takers: dict[str, list[str]] = {}
    declared = {}
    for adapter in adapters.values():
        for option in adapter.options:
            takers.setdefault(option.key, []).append(adapter.kind)
            declared[option.key] = option
    for key, option in declared.items():
        if key not in raw:
            continue
        if kind not in takers[key]:
            v.ld.problem(f"{path}.{key}", f"only the {' or '.join(takers[key])} provider takes {key}")
        if option.type is bool:
            if not isinstance(raw[key], bool):
                v.ld.problem(f"{path}.{key}", "must be true or false")
                continue
            value = raw[key]
        else:
            value = v.number(raw[key], f"{path}.{key}", option.minimum or 0, exclusive=False)
            if value is None:
                continue
            value = float(value)
        setattr(provider, key, value)


def _provider(v: _Validator, raw: Any, path: str) -> ProviderConfig | None:
    ld = v.ld
    adapters = _adapters()
    options = tuple(dict.fromkeys(o.key for adapter in adapters.values() for o in adapter.options))
    raw = v.mapping(raw, path, _SHARED_PROVIDER_KEYS + options, ("name", "kind"))
    name = v.string(raw.get("name"), f"{path}.name") if "name" in raw else None
    kind = raw.get("kind")
    if "kind" in raw and (not isinstance(kind, str) or kind not in adapters):
        ld.problem(f"{path}.kind", f"must be one of {', '.join(adapters)}")
        kind = None
    if name is not None and not _NAME.match(name):
        ld.problem(f"{path}.name", "may hold letters, digits, '.', '_' and '-' only")
    if name is None or kind is None:
        return None
    missing: list[str] = []
    provider = ProviderConfig(name=name, kind=kind)
    if adapters[kind].remote:
        base_url = v.string(raw.get("base_url"), f"{path}.base_url")
        if base_url is not None:
            base_url = _expand(base_url, missing)
            if not base_url.startswith(("http://", "https://")):
                ld.problem(f"{path}.base_url", "must start with http:// or https://")
            provider.base_url = base_url.rstrip("/")
    elif "base_url" in raw or "api_key" in raw:
        ld.problem(path, f"the {kind} provider takes no base_url or api_key")
    if "api_key" in raw and raw["api_key"] is not None:
        key = v.string(raw["api_key"], f"{path}.api_key")
        if key is not None:
            provider.key_vars = tuple(m.group(1) for m in _VAR.finditer(key))
            provider.api_key = _expand(key, missing) or None
    if "models" in raw:
        models = raw["models"]
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            ld.problem(f"{path}.models", "must be a list of model names")
        else:
            provider.models = tuple(models)
    if "timeouts" in raw:
        values = v.mapping(raw["timeouts"], f"{path}.timeouts", tuple(Timeouts.__annotations__))
        checked = {k: v.number(values[k], f"{path}.timeouts.{k}") for k in values if k in Timeouts.__annotations__}
        provider.timeouts = Timeouts(**{k: float(x) for k, x in checked.items() if x is not None})
    if "headers" in raw:
        headers = raw["headers"]
        if not isinstance(headers, dict) or not all(isinstance(x, str) for x in headers.values()):
            ld.problem(f"{path}.headers", "must map header names to strings")
        else:
            provider.headers = {k: _expand(x, missing) for k, x in headers.items()}
            provider.env_headers = tuple(k for k, x in headers.items() if _VAR.search(x))
    _kind_options(v, raw, path, kind, provider)
    if "max_event_bytes" in raw:
        size = v.number(raw["max_event_bytes"], f"{path}.max_event_bytes", 1024, integer=True, exclusive=False)
        if size is not None:
            provider.max_event_bytes = size
    if "retry" in raw:
        values = v.mapping(raw["retry"], f"{path}.retry", tuple(RetryPolicy.__annotations__))
        checked = {k: v.number(values[k], f"{path}.retry.{k}", 1 if k == "attempts" else 0,
                               integer=k == "attempts", exclusive=False)
                   for k in values if k in RetryPolicy.__annotations__}
        provider.retry = RetryPolicy(**{k: x for k, x in checked.items() if x is not None})
        if provider.retry.backoff_max < provider.retry.backoff_initial:
            ld.problem(f"{path}.retry.backoff_max", "must be at least backoff_initial")
    if "health" in raw:
        values = v.mapping(raw["health"], f"{path}.health", tuple(HealthPolicy.__annotations__))
        checked = {k: v.number(values[k], f"{path}.health.{k}", 0, integer=k == "max_failures",
                               exclusive=k != "max_failures")
                   for k in values if k in HealthPolicy.__annotations__}
        provider.health = HealthPolicy(**{k: x for k, x in checked.items() if x is not None})
    if "on_malformed" in raw:
        if raw["on_malformed"] not in ("skip", "error"):
            ld.problem(f"{path}.on_malformed", "must be skip or error")
        else:
            provider.on_malformed = raw["on_malformed"]
    if _has_userinfo(provider.base_url):  # aiohttp sends user:password@ as Basic auth
        if provider.api_key is not None or raw.get("api_key"):
            ld.problem(f"{path}.base_url", "carries credentials (user:password@) and api_key is set too: give the "
                       "provider one credential, in api_key or in the url")
        for name in provider.headers:
            if name.lower() == "authorization":
                ld.problem(f"{path}.headers.{name}", "an Authorization header and credentials in base_url "
                           "(user:password@) cannot both be sent: keep one")
    provider.missing_env = tuple(dict.fromkeys(missing))
    return provider


def _has_userinfo(url: str) -> bool:
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?$")


def host_problem(host: str) -> str | None:
    """What is wrong with an address to listen on (server.host, `--host`): an IP address or a host name."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
        return None
    except ValueError:
        pass
    if _HOST_NAME.match(host) and not host.replace(".", "").isdigit():
        return None
    return "must be an IP address (such as 127.0.0.1, 0.0.0.0 or ::1) or a host name"


def listen_url(host: str, port: int) -> str:
    """The URL of a listening address: an IPv6 address in brackets (http://[::1]:8080)."""
    bare = host.strip("[]")
    return f"http://[{bare}]:{port}" if ":" in bare else f"http://{host}:{port}"


def exposure_problem(open_access: bool, auth: str | None, host: str) -> str | None:
    """Secure default: without client keys the gateway serves loopback only, unless `auth: none` is written."""
    if open_access and auth is None and not is_loopback(host):
        return (f"serving {host} without client keys would let anyone reach the providers: add keys "
                f"(auth: keys), or write 'auth: none' to serve it open on purpose")
    return None


def _auth(v: _Validator, root: dict[str, Any], server: ServerConfig,
          middlewares: tuple[str, ...]) -> tuple[str | None, tuple[ClientKey, ...]]:
    ld = v.ld
    auth = root.get("auth")
    if "auth" in root and auth not in ("keys", "none"):
        ld.problem("auth", "must be keys or none")
        auth = None
    keys: list[ClientKey] = []
    listed = root.get("keys", [])
    if not isinstance(listed, list):
        ld.problem("keys", "must be a list of client keys")
        listed = []
    ids: set[str] = set()
    digests: set[str] = set()
    for i, raw in enumerate(listed):
        key = _client_key(v, raw, f"keys[{i}]")
        if key is None:
            continue
        if key.id in ids:
            ld.problem(f"keys[{i}].id", f"duplicate key id '{key.id}'")
        if key.sha256 in digests:
            ld.problem(f"keys[{i}].sha256", "the same key is listed twice")
        ids.add(key.id)
        digests.add(key.sha256)
        if key.limits and "ratelimit" not in middlewares:
            ld.problem(f"keys[{i}].limits", "limits need the ratelimit middleware: add it to middlewares")
        keys.append(key)
    if auth == "keys" and not listed:
        ld.problem("auth", "auth: keys needs at least one entry under keys")
    if auth == "none" and listed:
        ld.problem("keys", "auth: none serves without keys: remove the keys or write auth: keys")
    problem = exposure_problem(not listed, auth, server.host)
    if problem:
        ld.problem("server.host", problem)
    return auth, tuple(keys)


def _client_key(v: _Validator, raw: Any, path: str) -> ClientKey | None:
    ld = v.ld
    raw = v.mapping(raw, path, ("id", "sha256", "models", "limits", "resumable", "coalesce_ms"), ("id", "sha256"))
    key_id = v.string(raw["id"], f"{path}.id") if "id" in raw else None
    if key_id is not None and not _NAME.match(key_id):
        ld.problem(f"{path}.id", "may hold letters, digits, '.', '_' and '-' only")
        key_id = None
    digest = raw.get("sha256")
    if "sha256" in raw and (not isinstance(digest, str) or not _SHA256_HEX.match(digest)):
        ld.problem(f"{path}.sha256", "must be the 64 hex digits of the key's SHA-256 (gateway hash-key prints it)")
        digest = None
    models = None
    if "models" in raw:
        models = raw["models"]
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            ld.problem(f"{path}.models", "must be a list of model patterns such as 'openai/*'")
            models = None
        else:
            models = tuple(models)
    limits = KeyLimits()
    if "limits" in raw:
        values = v.mapping(raw["limits"], f"{path}.limits", LIMIT_NAMES)
        checked = {name: v.number(values[name], f"{path}.limits.{name}", 1, integer=True, exclusive=False)
                   for name in LIMIT_NAMES if name in values}
        limits = KeyLimits(**{name: n for name, n in checked.items() if n is not None})
    resumable = False
    if "resumable" in raw:
        if isinstance(raw["resumable"], bool):
            resumable = raw["resumable"]
        else:
            ld.problem(f"{path}.resumable", "must be true or false")
    coalesce_ms = None
    if "coalesce_ms" in raw:
        coalesce_ms = v.number(raw["coalesce_ms"], f"{path}.coalesce_ms", 0, integer=True, exclusive=False)
        if coalesce_ms is not None and coalesce_ms > MAX_COALESCE_MS:
            ld.problem(f"{path}.coalesce_ms", f"must be at most {MAX_COALESCE_MS}")
            coalesce_ms = None
    if key_id is None or digest is None:
        return None
    return ClientKey(key_id, digest.lower(), models, limits, resumable, coalesce_ms)


def _limits(v: _Validator, raw: Any) -> LimitsConfig:
    ld = v.ld
    raw = v.mapping(raw, "limits", ("backend", "url", "on_backend_error", "redis_pool_size", "redis_pool_wait"))
    backend = raw.get("backend", "memory")
    if backend not in ("memory", "redis"):
        ld.problem("limits.backend", "must be memory or redis")
        backend = "memory"
    on_error = raw.get("on_backend_error", "open")
    if on_error not in ("open", "closed"):
        ld.problem("limits.on_backend_error", "must be open or closed")
        on_error = "open"
    url = LimitsConfig.url
    if "url" in raw and v.string(raw["url"], "limits.url"):
        missing: list[str] = []  # the url may carry a password from the environment: never echo it
        url = _expand(raw["url"], missing)
        if missing:
            ld.problem("limits.url", f"{' and '.join(dict.fromkeys(missing))} is not set")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            ld.problem("limits.url", "must start with redis://, rediss:// or unix://")
        if backend != "redis":
            ld.problem("limits.url", "only the redis backend takes a url")
    pool: dict[str, Any] = {}
    for name in ("redis_pool_size", "redis_pool_wait"):
        if name in raw:
            if backend != "redis":
                ld.problem(f"limits.{name}", f"only the redis backend takes {name}")
            number = v.number(raw[name], f"limits.{name}", 1 if name == "redis_pool_size" else 0,
                              integer=name == "redis_pool_size", exclusive=name == "redis_pool_wait")
            if number is not None:
                pool[name] = number if name == "redis_pool_size" else float(number)
    return LimitsConfig(backend, url, on_error, **pool)


def _resume(v: _Validator, raw: Any) -> ResumeConfig:
    ld = v.ld
    raw = v.mapping(raw, "resume", ("backend", "url", "grace", "max_bytes", "max_total_bytes"))
    backend = raw.get("backend", "memory")
    if backend not in ("memory", "redis"):
        ld.problem("resume.backend", "must be memory or redis")
        backend = "memory"
    url = ResumeConfig.url
    if "url" in raw and v.string(raw["url"], "resume.url"):
        missing: list[str] = []  # the url may carry a password from the environment: never echo it
        url = _expand(raw["url"], missing)
        if missing:
            ld.problem("resume.url", f"{' and '.join(dict.fromkeys(missing))} is not set")
        elif not url.startswith(("redis://", "rediss://", "unix://")):
            ld.problem("resume.url", "must start with redis://, rediss:// or unix://")
        if backend != "redis":
            ld.problem("resume.url", "only the redis backend takes a url")
    numbers: dict[str, Any] = {}
    for name in ("grace", "max_bytes", "max_total_bytes"):
        if name in raw:
            number = v.number(raw[name], f"resume.{name}", 0 if name == "grace" else 1,
                              integer=name != "grace", exclusive=False)
            if number is not None:
                numbers[name] = float(number) if name == "grace" else number
    settings = ResumeConfig(backend, url, **numbers)
    if settings.max_bytes > settings.max_total_bytes:
        ld.problem("resume.max_bytes", "must not be larger than resume.max_total_bytes")
    return settings


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    source = Path(path) if path else DEFAULT_CONFIG
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(source), [Problem("", None, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(source), [Problem("", None, f"cannot read: not UTF-8 text (byte {exc.start})")]) from None
    return parse_config(text, str(source))


def _trusted_proxies(v: _Validator, raw: Any, path: str) -> tuple[IPNetwork, ...]:
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


def _admin_keys(v: _Validator, raw: Any) -> frozenset[str]:
    if not isinstance(raw, list):
        v.ld.problem("server.admin_keys", "must be a list of sha256 hex digests (gateway hash-key prints one)")
        return frozenset()
    digests = set()
    for i, digest in enumerate(raw):
        if isinstance(digest, str) and _SHA256_HEX.match(digest):
            digests.add(digest.lower())
        else:
            v.ld.problem(f"server.admin_keys[{i}]",
                         "must be the 64 hex digits of the key's SHA-256 (gateway hash-key prints it)")
    return frozenset(digests)


def _logging(v: _Validator, raw: Any) -> LoggingConfig:
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
