"""What a parsed providers.yaml is: the settings of each section, as the rest of the gateway reads them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..moderation_config import ModerationConfig
from ..redaction import header_secrets, url_secrets
from .hosts import is_loopback

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
