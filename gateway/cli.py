"""`gateway serve` and `gateway check`."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .config import (DEFAULT_CONFIG, LOG_LEVELS, Config, ConfigError, exposure_problem, host_problem,
                     is_loopback, listen_url, load_config)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM streaming gateway")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", default=None, help=f"providers.yaml to load (default: {DEFAULT_CONFIG})")
    serve.add_argument("--host", help="address to listen on (default: the config's server.host, else 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: the config's server.port, else 8080)")
    serve.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS,
                       help="overrides the config's logging.level (default INFO)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes on the one port, kept by a supervisor (default 1: no supervisor)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a supervisor's worker
    check = commands.add_parser("check", help="validate a config and print each problem with its place")
    check.add_argument("--config", default=None, help=f"providers.yaml to check (default: {DEFAULT_CONFIG})")
    commands.add_parser("hash-key", help="print the sha256 of a client key read from stdin, for keys[].sha256")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config)
    if args.command == "hash-key":
        return _hash_key()
    return _serve(args)


def _check(path: str | None) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1  # check found problems; serve's start-up failures are 2
    for provider in config.providers.values():
        if not provider.enabled:
            print(f"{config.source}: note: provider '{provider.name}' will be disabled until "
                  f"{' and '.join(provider.missing_env)} is set")
    if config.moderation.active and "moderate" not in config.middlewares:
        print(f"{config.source}: note: moderation is configured but 'moderate' is not in middlewares: it is not applied")
    if config.open_access and not is_loopback(config.server.host):
        print(f"{config.source}: note: auth: none: {config.server.host} will be served without client keys")
    print(f"{config.source}: ok ({len(config.providers)} providers, {len(config.routes)} routes)")
    return 0


def _hash_key() -> int:
    from .auth import hash_key

    key = sys.stdin.buffer.read().rstrip(b"\r\n")
    if not key:
        print("gateway hash-key: no key on stdin (try: printf %s \"$KEY\" | gateway hash-key)", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    from .logsetup import configure

    configure(config.logging.level, config.logging.format, pinned_level=args.log_level)
    from .app import create_app

    if args.host is not None and host_problem(args.host):  # the config's own host is checked with the config
        print(f"gateway serve: --host {args.host!r}: {host_problem(args.host)}", file=sys.stderr)
        return 2
    host = (args.host or config.server.host).strip("[]")  # [::1] as in a URL: the address is ::1
    port = args.port if args.port is not None else config.server.port
    if not 0 <= port <= 65535:  # the config's own port is checked with the config
        print(f"gateway serve: --port {port}: must be between 0 and 65535", file=sys.stderr)
        return 2
    config.server.host = host  # what depends on the address (the playground's default) follows --host
    problem = exposure_problem(config.open_access, config.auth, host)
    if problem:  # --host may differ from the config's own server.host
        print(f"{config.source}: --host: {problem}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"gateway serve: --workers {args.workers}: must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1:
        return _supervise(args, config, host, port)
    if config.open_access and not is_loopback(host):
        logging.getLogger("gateway").warning("auth: none: serving %s without client keys, anyone who reaches it "
                                             "can use every provider", host)
    try:  # uvloop cuts the per-chunk CPU by about a third at paced load (bench/README.md)
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    from .server import ListenError, serve

    try:
        serve(create_app(config), host, port, loop=loop, reuse_port=args.worker)
    except ListenError as exc:
        print(f"gateway serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _supervise(args: argparse.Namespace, config: Config, host: str, port: int) -> int:
    """`--workers N`: reserves the address, then a supervisor runs N `gateway serve --worker` processes."""
    from .limits import wants_limiter
    from .supervisor import ReserveError, Supervisor, reserve

    if wants_limiter(config) and config.limits.backend == "memory":
        # each worker would count its own budgets: a key would get N times its limits, unpredictably
        print(f"gateway serve: --workers {args.workers}: limits.backend memory counts each worker apart (a key "
              f"would get up to {args.workers} times its limits): set limits.backend: redis, or run one worker",
              file=sys.stderr)
        return 2
    try:
        sockets, port = reserve(host, port)
    except ReserveError as exc:
        print(f"gateway serve: {exc}", file=sys.stderr)
        return 2
    worker_args = ["--config", str(config.source), "--host", host, "--port", str(port), "--worker"]
    if args.log_level:
        worker_args += ["--log-level", args.log_level]
    logging.getLogger("gateway").info("supervising %d workers on %s", args.workers, listen_url(host, port))
    try:
        return Supervisor(worker_args, args.workers, config_path=str(config.source)).run()
    finally:
        for sock in sockets:
            sock.close()
