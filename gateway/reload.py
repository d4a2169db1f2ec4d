"""The live configuration: the generation new requests get, built at start and again on SIGHUP.

A generation is the loaded providers.yaml with what is built from it (the key table, the limit
backend). A reload builds the next one aside and swaps it in whole, so that a request sees one config
from its start to its end (appkeys.generation) and a file with problems changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .appkeys import LIVE, Generation, Live
from .auth import KeyTable
from .config import Config, ConfigError, exposure_problem, load_config
from .logsetup import reconfigure
from .limits import LimitBackend, create_limiter, hand_over, ping, wants_limiter
from .metrics import METRICS
from .redaction import redacting_logs
from .shared_health import SHARED_HEALTH

log = logging.getLogger("gateway.reload")

# What the listening sockets and the server were built with: a reload that changes them says so.
_RESTART_ONLY = ("max_body_bytes", "shutdown_grace", "request_timeout", "cors", "playground")


class _Retired:
    """Backends and secret scopes of past generations: streams in flight may still use them, so they
    are closed with the application."""

    def __init__(self) -> None:
        self.limiters: list[LimitBackend] = []
        self.secret_scopes: list[AsyncIterator[None]] = []
        self.lock = asyncio.Lock()


_RETIRED = web.AppKey("reload_retired", _Retired)


def setup_live(app: web.Application, config: Config) -> None:
    """The first generation; its limit backend is started with the app, pinged, and its state logged."""
    app[LIVE] = Live(Generation(config, KeyTable(config.keys), None))
    app[_RETIRED] = _Retired()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        live = app[LIVE]
        if wants_limiter(config):
            limiter = create_limiter(config, app[METRICS])
            await limiter.start()
            await _log_backend_state(limiter, config)
            live.current = Generation(config, live.current.keys, limiter)
        yield
        retired = app[_RETIRED]
        last = live.current.limiter
        for old in dict.fromkeys([*retired.limiters, *([last] if last is not None else [])]):
            await old.close()
        for scope in retired.secret_scopes:
            await anext(scope, None)

    app.cleanup_ctx.append(lifecycle)


async def _log_backend_state(limiter: LimitBackend, config: Config) -> None:
    if config.limits.backend != "redis":
        return
    problem = await ping(limiter)
    if problem:
        log.warning("limits backend: %s; on_backend_error: %s applies until it does", problem,
                    config.limits.on_backend_error)
    else:
        log.info("limits backend: redis answers")


async def reload(app: web.Application) -> bool:
    """SIGHUP: the config file read again; on success new requests get it, on problems each is logged
    and the running config stays. True when the new config is in use."""
    retired = app[_RETIRED]
    async with retired.lock:  # two SIGHUPs in a row: one reload after the other
        live = app[LIVE]
        old = live.current
        source = old.config.source
        try:
            config = load_config(source)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s: %s", exc.source, problem)
            log.error("reload refused: %d problem(s) in %s; the running config stays", len(exc.problems),
                      exc.source)
            live.refused += 1
            return False
        config.server.host, config.server.port = old.config.server.host, old.config.server.port  # the sockets'
        exposed = exposure_problem(config.open_access, config.auth, config.server.host)
        if exposed:
            log.error("reload refused: %s: %s; the running config stays", source, exposed)
            live.refused += 1
            return False
        limiter = hand_over(old.limiter, old.config, config) if wants_limiter(config) else None
        if wants_limiter(config) and limiter is None:
            limiter = create_limiter(config, app[METRICS])
            await limiter.start()
            await _log_backend_state(limiter, config)
        if old.limiter is not None and old.limiter is not limiter:
            retired.limiters.append(old.limiter)  # streams begun on it settle on it
        scope = redacting_logs(config)(app)  # the new provider keys are redacted from now on
        await anext(scope)
        retired.secret_scopes.append(scope)
        app[METRICS].configure(config)
        live.current = Generation(config, KeyTable(config.keys), limiter, old.number + 1)
        sharing = app.get(SHARED_HEALTH)
        if sharing is not None:  # the new providers' cooldowns shared too, or no sharing without redis
            await sharing.follow(config)
        relogged = reconfigure(config.logging.level, config.logging.format)  # the lines below in the new form
        if relogged:
            log.info("reload: logging now %s", ", ".join(relogged))
        changed = [name for name in _RESTART_ONLY
                   if getattr(config.server, name) != getattr(old.config.server, name)]
        if changed:
            log.warning("reload: server.%s changed: takes effect at the next restart", ", server.".join(changed))
        log.info("reloaded %s: %d provider(s), %d route(s), %d key(s)", source, len(config.providers),
                 len(config.routes), len(config.keys))
        return True
