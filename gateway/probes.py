"""Probes: /healthz (alive), /readyz (can serve), and /admin/health (the provider report, admins only)."""

from __future__ import annotations

import asyncio
import hmac
import os
from typing import Any

import orjson
from aiohttp import web

from .access_log import begin
from .auth import bearer_token, presented_digest
from .appkeys import HEALTH, IN_FLIGHT, LIVE, SESSION, Generation, generation
from .config import is_loopback
from .errors import GatewayError
from .health import Health
from .limits import ping

# Headers a proxy adds: a request that carries one came through nginx, even from a loopback peer.
_FORWARDED = ("X-Forwarded-For", "X-Real-IP", "Forwarded")


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: orjson.dumps(o).decode())


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Nothing about providers (that is /admin/health)."""
    begin(request).endpoint = "healthz"
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 {"status": "ready"}, or 503 {"status": "not_ready", "reasons": [...]}. The reasons
    name routes and the limits backend, not providers' keys or errors (those are in /admin/health)."""
    record = begin(request)
    record.endpoint = "readyz"
    gen = generation(request)
    reasons = await not_ready(gen, request.app[HEALTH])
    if reasons:
        record.outcome = "not_ready"
        return _json({"status": "not_ready", "reasons": reasons}, 503)
    return _json({"status": "ready"})


async def not_ready(gen: Generation, health: Health) -> list[str]:
    config = gen.config
    reasons = []
    if gen.limiter is None and any(key.limits for key in config.keys):
        reasons.append("the limits backend is not started yet")
    problem = await ping(gen.limiter)
    if problem:
        reasons.append(f"limits backend: {problem}")

    def can_try(name: str) -> bool:
        provider = config.providers.get(name)
        return provider is not None and provider.enabled and health.cooling_for(provider) <= 0

    for route, targets in config.routes.items():
        if not any(can_try(target.partition("/")[0]) for target in targets):
            reasons.append(f"route '{route}': no provider can be tried (disabled or cooling down)")
    if not config.routes and not any(can_try(name) for name in config.providers):
        reasons.append("no provider can be tried (disabled or cooling down)")
    return reasons


def _is_admin(request: web.Request, gen: Generation) -> bool:
    """An admin key (server.admin_keys), or a loopback peer whose request did not come through a proxy."""
    presented = bearer_token(request)
    if presented is not None:
        digest = presented_digest(presented).hex()
        return any(hmac.compare_digest(digest, admin) for admin in gen.config.server.admin_keys)
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = peer[0] if isinstance(peer, tuple) else ""
    return bool(host) and is_loopback(host) and not any(name in request.headers for name in _FORWARDED)


async def admin_health(request: web.Request) -> web.Response:
    """The provider report: state, cooldown, last error, missing key variables; and the process's runtime."""
    record = begin(request)
    record.endpoint = "admin"
    gen = generation(request)
    if not _is_admin(request, gen):
        error = GatewayError(401, "the admin view needs an admin key (server.admin_keys) or a local request",
                             code="admin_key_required", headers={"WWW-Authenticate": "Bearer"})
        record.outcome = error.code
        return web.Response(status=401, body=error.to_json(), content_type="application/json",
                            headers={**error.headers, "x-request-id": record.request_id})
    health = request.app[HEALTH]
    providers = {
        p.name: {"kind": p.kind, "enabled": p.enabled,
                 **({"missing_env": list(p.missing_env)} if p.missing_env else {}), **health.report(p)}
        for p in gen.config.providers.values()
    }
    reasons = await not_ready(gen, health)
    return _json({"status": "not_ready" if reasons else "ready", "reasons": reasons, "providers": providers,
                  "config": {"source": str(gen.config.source), "generation": gen.number,
                             "reloads_refused": request.app[LIVE].refused},
                  "runtime": _runtime(request.app)})


def _runtime(app: web.Application) -> dict[str, Any]:
    """What a leak would show: requests in flight, upstream connections held, asyncio tasks alive."""
    connector = app[SESSION].connector
    return {
        "pid": os.getpid(),  # with --workers: which worker answered
        "in_flight": len(app[IN_FLIGHT].tasks),
        "upstream_connections": len(getattr(connector, "_acquired", ())),  # checked out of the pool now
        "upstream_pooled": sum(len(idle) for idle in getattr(connector, "_conns", {}).values()),  # idle keep-alive
        "tasks": len(asyncio.all_tasks()),
    }


def setup_probes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/admin/health", admin_health)
