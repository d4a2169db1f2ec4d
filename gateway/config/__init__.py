"""providers.yaml: loading, `${VAR}` expansion, validation with each problem's place (key path, line).

One module per part: `loader` reads the YAML and holds the checks, `model` the parsed settings, and one
module per section parses it (`server`, `providers`, `routing`, `middlewares`, `access`, `resume`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .access import parse_auth, parse_limits
from .hosts import exposure_problem, host_problem, is_loopback, listen_url
from .loader import ConfigError, Loader, Problem, Validator
from .middlewares import parse_middlewares, parse_settings, section_keys
from .model import (LIMIT_NAMES, LOG_FORMATS, LOG_LEVELS, MAX_COALESCE_MS, ClientKey, Config, CorsConfig,
                    HealthPolicy, IPNetwork, KeyLimits, LimitsConfig, LoggingConfig, ProviderConfig, ResumeConfig,
                    RetryPolicy, ServerConfig, Timeouts)
from .providers import parse_providers
from .resume import parse_resume
from .routing import parse_routes
from .server import parse_logging, parse_server

__all__ = [
    "DEFAULT_CONFIG", "LIMIT_NAMES", "LOG_FORMATS", "LOG_LEVELS", "MAX_COALESCE_MS", "ClientKey", "Config",
    "ConfigError", "CorsConfig", "HealthPolicy", "IPNetwork", "KeyLimits", "LimitsConfig", "LoggingConfig",
    "Problem", "ProviderConfig", "ResumeConfig", "RetryPolicy", "ServerConfig", "Timeouts", "Validator",
    "exposure_problem", "host_problem", "is_loopback", "listen_url", "load_config", "parse_config",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "providers.yaml"  # gateway/providers.yaml


def parse_config(text: str, source: str = "<config>") -> Config:
    loader = Loader(text, source)
    if loader.problems and loader.data is None:
        raise ConfigError(source, loader.problems)
    v = Validator(loader)
    root = v.mapping(loader.data, "", ("server", "providers", "routes", "middlewares", "auth", "keys", "limits",
                                       "logging", "resume", *section_keys()), ("providers",))

    server = parse_server(v, root.get("server", {}))
    providers = parse_providers(v, root.get("providers", []))
    routes = parse_routes(v, root.get("routes") or {}, providers)
    middlewares = parse_middlewares(v, root)
    settings = parse_settings(v, root)
    auth, keys = parse_auth(v, root, server, middlewares)
    limits = parse_limits(v, root.get("limits", {})) if "limits" in root else LimitsConfig()
    logging = parse_logging(v, root["logging"]) if "logging" in root else LoggingConfig()
    resume = parse_resume(v, root["resume"]) if "resume" in root else ResumeConfig()

    if loader.problems:
        raise ConfigError(source, loader.problems)
    return Config(server, providers, routes, middlewares, source, settings, auth, keys, limits, logging, resume)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    source = Path(path) if path else DEFAULT_CONFIG
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(source), [Problem("", None, f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(source), [Problem("", None, f"cannot read: not UTF-8 text (byte {exc.start})")]) from None
    return parse_config(text, str(source))
