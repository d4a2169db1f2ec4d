"""The `providers` section: each provider's shared keys, and the options its kind declares (gateway/providers/)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .loader import NAME, VAR, Validator, expand
from .model import HealthPolicy, ProviderConfig, RetryPolicy, Timeouts

_SHARED_PROVIDER_KEYS = ("name", "kind", "base_url", "api_key", "models", "timeouts", "headers", "max_event_bytes",
                         "retry", "health", "on_malformed")


def parse_providers(v: Validator, raw_providers: Any) -> dict[str, ProviderConfig]:
    providers: dict[str, ProviderConfig] = {}
    if not isinstance(raw_providers, list) or not raw_providers:
        v.ld.problem("providers", "must be a non-empty list")
        raw_providers = []
    for i, raw in enumerate(raw_providers):
        provider = _provider(v, raw, f"providers[{i}]")
        if provider is None:
            continue
        if provider.name in providers:
            v.ld.problem(f"providers[{i}].name", f"duplicate provider name '{provider.name}'")
        providers[provider.name] = provider
    return providers


def _adapters() -> dict[str, Any]:
    """The kinds and their options, from the one list of adapters (imported here: the adapters import
    gateway.config)."""
    from ..providers import ADAPTERS

    return ADAPTERS


def _kind_options(v: Validator, raw: dict[str, Any], path: str, kind: str, provider: ProviderConfig) -> None:
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


def _provider(v: Validator, raw: Any, path: str) -> ProviderConfig | None:
    ld = v.ld
    adapters = _adapters()
    options = tuple(dict.fromkeys(o.key for adapter in adapters.values() for o in adapter.options))
    raw = v.mapping(raw, path, _SHARED_PROVIDER_KEYS + options, ("name", "kind"))
    name = v.string(raw.get("name"), f"{path}.name") if "name" in raw else None
    kind = raw.get("kind")
    if "kind" in raw and (not isinstance(kind, str) or kind not in adapters):
        ld.problem(f"{path}.kind", f"must be one of {', '.join(adapters)}")
        kind = None
    if name is not None and not NAME.match(name):
        ld.problem(f"{path}.name", "may hold letters, digits, '.', '_' and '-' only")
    if name is None or kind is None:
        return None
    missing: list[str] = []
    provider = ProviderConfig(name=name, kind=kind)
    if adapters[kind].remote:
        base_url = v.string(raw.get("base_url"), f"{path}.base_url")
        if base_url is not None:
            base_url = expand(base_url, missing)
            if not base_url.startswith(("http://", "https://")):
                ld.problem(f"{path}.base_url", "must start with http:// or https://")
            provider.base_url = base_url.rstrip("/")
    elif "base_url" in raw or "api_key" in raw:
        ld.problem(path, f"the {kind} provider takes no base_url or api_key")
    if "api_key" in raw and raw["api_key"] is not None:
        key = v.string(raw["api_key"], f"{path}.api_key")
        if key is not None:
            provider.key_vars = tuple(m.group(1) for m in VAR.finditer(key))
            provider.api_key = expand(key, missing) or None
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
            provider.headers = {k: expand(x, missing) for k, x in headers.items()}
            provider.env_headers = tuple(k for k, x in headers.items() if VAR.search(x))
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
