"""Which provider and upstream model serve the model name a client wrote."""

from __future__ import annotations

from .config import Config, ProviderConfig
from .errors import GatewayError


def _not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist: use '<provider>/<model>' or a route name (see GET /v1/models)",
        param="model",
        code="model_not_found",
    )


def _disabled(provider: ProviderConfig) -> GatewayError:
    variables = " and ".join(provider.missing_env)
    return GatewayError(
        503,
        f"provider '{provider.name}' is disabled: set {variables} in the gateway's environment and restart it",
        type="service_unavailable",
        code="provider_disabled",
    )


def _lookup(config: Config, target: str) -> tuple[ProviderConfig, str] | None:
    name, slash, model = target.partition("/")
    provider = config.providers.get(name)
    if not slash or not model or provider is None:
        return None
    if provider.models is not None and model not in provider.models:
        return None
    return provider, model


def names_a_provider(config: Config, requested: str) -> bool:
    """Whether `requested` has the '<provider>/<model>' form: the part before its first slash is a provider's name."""
    name, slash, _ = requested.partition("/")
    return bool(slash) and name in config.providers


def resolve(config: Config, requested: str) -> list[tuple[ProviderConfig, str]]:
    """The enabled targets for a model name, in order. A route name comes first; then '<provider>/<model>',
    which wins over any bare model name: 'openai/gpt-oss-120b' means the provider 'openai', never another
    provider that lists 'openai/gpt-oss-120b' (that one is 'groq/openai/gpt-oss-120b'). Only a name that names
    no provider is looked up as a bare model in the providers' `models` lists."""
    if requested in config.routes:
        candidates = [_lookup(config, target) for target in config.routes[requested]]
    elif names_a_provider(config, requested):
        candidates = [_lookup(config, requested)]
    else:
        candidates = [
            (p, requested) for p in config.providers.values() if p.models is not None and requested in p.models
        ]
    found = [c for c in candidates if c is not None]
    if not found:
        raise _not_found(requested)
    enabled = [(provider, model) for provider, model in found if provider.enabled]
    if not enabled:
        raise _disabled(found[0][0])
    return enabled


def listed_models(config: Config) -> list[tuple[str, str]]:
    """(model id, owner) for GET /models: enabled providers' allow-lists, then the routes."""
    models = [
        (f"{p.name}/{m}", p.name) for p in config.providers.values() if p.enabled for m in (p.models or ())
    ]
    models += [(name, "gateway") for name in config.routes]
    return models
