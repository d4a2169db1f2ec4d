"""`gateway serve --workers N`: N worker processes on one port, and the supervisor that keeps them.

Each worker is a `gateway serve` of its own that listens with SO_REUSEPORT, so that the kernel spreads
new connections over them. The supervisor binds the address first without listening: that reserves
the port (a port 0 becomes a real one every worker shares), and an address that cannot be served fails
once, before any worker starts. It restarts a worker that dies, forwards SIGHUP (reload) to each, and
on SIGTERM or SIGINT sends each a SIGTERM and waits: every worker drains within its own shutdown grace.

A worker that cannot start (it dies within FAST_FAILURE seconds, again and again) is restarted after a
pause that doubles with each such death (RestartPolicy); after GIVE_UP_AFTER of them in a row the
supervisor stops every worker and exits 1, so that the service manager sees the failure. A worker that
ran for a while before dying, or a restarted one that stays up, resets the count.

Prometheus: the workers write their samples to files in a directory the supervisor makes
(PROMETHEUS_MULTIPROC_DIR, prometheus-client's multiprocess mode), so that /metrics, whichever worker
answers it, adds up every worker's; the directory goes when the supervisor ends.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .config import listen_url

log = logging.getLogger("gateway.supervisor")

POLL = 0.2  # seconds between looks at the workers: a restart is never urgent to the millisecond
FAST_FAILURE = 5.0  # seconds: a worker that dies sooner after its start failed to start
FIRST_PAUSE = 0.25  # seconds before the restart after a first fast failure; doubled after each next one
MAX_PAUSE = 4.0
GIVE_UP_AFTER = 6  # fast failures in a row: the workers cannot start, restarting them would only spin
_PR_SET_PDEATHSIG = 1


class ReserveError(Exception):
    """The address cannot be served: in use, not on this host, unknown."""


def reserve(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Bound (not listening) SO_REUSEPORT sockets on every address of `host`, and the port they hold."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, address in dict.fromkeys((info[0], info[4]) for info in infos):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # every address on the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except (OSError, OverflowError) as exc:
        for sock in sockets:
            sock.close()
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        raise ReserveError(f"cannot listen on {listen_url(host, port).removeprefix('http://')}: {reason}") from None
    return sockets, sockets[0].getsockname()[1]


def _die_with_parent() -> None:
    """In the worker, before exec: a SIGTERM when the supervisor goes (even by SIGKILL), so no worker
    is left serving alone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a killed supervisor leaves its workers to the service manager


class RestartPolicy:
    """When to start a worker again after one died: at once after one that ran for a while; after a
    pause doubling with each fast failure in a row (capped); never after `give_up_after` of them."""

    def __init__(self, fast_failure: float = FAST_FAILURE, first_pause: float = FIRST_PAUSE,
                 max_pause: float = MAX_PAUSE, give_up_after: int = GIVE_UP_AFTER) -> None:
        self.fast_failure = fast_failure
        self.first_pause = first_pause
        self.max_pause = max_pause
        self.give_up_after = give_up_after
        self.fast_failures = 0  # in a row

    def died(self, lived: float) -> float | None:
        """A worker died `lived` seconds after its start: the pause before its successor, None to give up."""
        if lived >= self.fast_failure:
            self.fast_failures = 0
            return 0.0
        self.fast_failures += 1
        if self.fast_failures >= self.give_up_after:
            return None
        return min(self.max_pause, self.first_pause * 2.0 ** (self.fast_failures - 1))

    def stayed_up(self, lived: float) -> None:
        """The newest worker (started after the last failure) is alive `lived` seconds after its start."""
        if lived >= self.fast_failure:
            self.fast_failures = 0


class Supervisor:
    def __init__(self, worker_args: list[str], workers: int, policy: RestartPolicy | None = None,
                 config_path: str | None = None) -> None:
        self.worker_args = worker_args
        self.config_path = config_path  # its logging section is the supervisor's own too
        self.count = workers
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}  # pid -> (process, started)
        self.restarts: list[float] = []  # when each replacement of a dead worker is due (monotonic)
        self.policy = policy or RestartPolicy()
        self.stopping = False
        self.metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}

    def _start_one(self) -> None:
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", *self.worker_args], env=self.env,
                                   preexec_fn=_die_with_parent)
        self.workers[process.pid] = (process, time.monotonic())
        log.info("worker %d started", process.pid)

    def _signal_all(self, signum: int) -> None:
        for process, _ in self.workers.values():
            if process.poll() is None:
                process.send_signal(signum)

    def _stop(self, _signum: int, _frame: object) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("stopping %d worker(s)", len(self.workers))
            self._signal_all(signal.SIGTERM)

    def _hangup(self, _signum: int, _frame: object) -> None:
        # The supervisor's own logging first: once a worker answers on the new config, the supervisor's
        # next line (a SIGTERM's "stopping", say) is in the new format too, not in the old one.
        self._reload_own_logging()
        log.info("SIGHUP: each worker reloads its config")
        self._signal_all(signal.SIGHUP)

    def _reload_own_logging(self) -> None:
        if self.config_path is None:
            return
        from .config import ConfigError, load_config
        from .logsetup import reconfigure

        try:
            config = load_config(self.config_path)
        except ConfigError:
            return  # each worker logs the problems and keeps its config
        reconfigure(config.logging.level, config.logging.format)  # its lines follow the workers' logging section

    def run(self) -> int:
        """Until SIGTERM or SIGINT and every worker's end: 0 when each ended cleanly; 1 when one did not,
        or when the workers could not start (the supervisor gave up)."""
        previous = {signum: signal.signal(signum, handler) for signum, handler in
                    ((signal.SIGTERM, self._stop), (signal.SIGINT, self._stop), (signal.SIGHUP, self._hangup))}
        failed = False
        try:
            for _ in range(self.count):
                self._start_one()
            while self.workers or (self.restarts and not self.stopping):
                time.sleep(POLL)
                failed = self._reap() or failed
                self._restart_due()
        finally:
            self.stopping = True
            self._signal_all(signal.SIGTERM)
            for process, _ in self.workers.values():
                process.wait()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 1 if failed else 0

    def _reap(self) -> bool:
        """Workers that ended: each replaced in due time, unless stopping. True when one failed for good:
        it ended badly while stopping, or the workers cannot start (then every worker is stopped)."""
        failed = False
        now = time.monotonic()
        for pid, (process, started) in list(self.workers.items()):
            code = process.poll()
            if code is None:
                continue
            del self.workers[pid]
            self._forget_metrics(pid)
            if self.stopping:
                failed = failed or code != 0
                continue
            pause = self.policy.died(now - started)
            if pause is None:
                log.error("worker %d exited with %s: %d workers in a row died within %g s of their start; giving "
                          "up, stopping every worker (the log above says why they died)", pid, _exit_words(code),
                          self.policy.fast_failures, self.policy.fast_failure)
                self.stopping = True
                self._signal_all(signal.SIGTERM)
                return True
            log.warning("worker %d exited with %s: starting another%s", pid, _exit_words(code),
                        f" in {pause:g} s" if pause else "")
            self.restarts.append(now + pause)
        if self.workers and not self.restarts:  # the newest worker began after the last death
            self.policy.stayed_up(now - max(started for _, started in self.workers.values()))
        return failed

    def _restart_due(self) -> None:
        now = time.monotonic()
        due = [when for when in self.restarts if when <= now]
        self.restarts = [when for when in self.restarts if when > now]
        if not self.stopping:
            for _ in due:
                self._start_one()

    def _forget_metrics(self, pid: int) -> None:
        """A dead worker's live gauges (streams in flight) leave the sum; its counters stay counted."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]  # unannotated upstream


def _exit_words(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"
