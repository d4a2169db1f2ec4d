"""What the bench commands share: child processes on free loopback ports, their health and their /proc figures."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The measured process on one core; the upstream and the load generator (this process) on the other.
TARGET_CPU, DRIVER_CPU = 0, 1


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(argv: list[str], pin: bool) -> list[str]:
    """argv run on TARGET_CPU when pinning."""
    return ["taskset", "-c", str(TARGET_CPU), *argv] if pin else argv


def pin_driver() -> None:
    """This process, and the children it starts from now on unless pinned(), on DRIVER_CPU."""
    os.sched_setaffinity(0, {DRIVER_CPU})


def layout(pin: bool) -> str:
    if not pin:
        return "not pinned"
    return f"target on CPU {TARGET_CPU}; upstream and load generator on CPU {DRIVER_CPU}"


def free_ports(count: int) -> list[int]:
    """Ports the kernel picks; all held open together so that no two are the same."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM if this process dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A child process with its output in a log file; its own session, so Ctrl-C reaches only us."""

    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path = REPO) -> None:
        self.name = name
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far: fields 14 and 15 of /proc/<pid>/stat, in clock ticks."""
        self._check_alive()
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()  # the name in parentheses may hold spaces
        return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # fields[0] is field 3, "state"

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (the peak resident size) from /proc/<pid>/status, in KiB."""
        self._check_alive()
        figures = {}
        with open(f"/proc/{self.pid}/status", "rb") as f:
            for line in f:
                name, _, value = line.partition(b":")
                if name in (b"VmRSS", b"VmHWM"):
                    figures[name.decode()] = int(value.split()[0])  # "  123456 kB"
        return figures

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have spent so far, from the first line of /proc/stat."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(t) for t in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


async def wait_healthy(session: aiohttp.ClientSession, child: Child, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SystemExit(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        try:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"{child.name} did not answer /healthz within {timeout:.0f}s:\n{child.log_tail()}")


def commit(checkout: Path = REPO) -> str:
    """The checkout measured, so that runs can be compared over time."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=checkout, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def quiet_collector() -> None:
    """The load generator tunes Python's cycle collector as `gateway serve` does (gateway/server.py): at
    the default threshold its full collections stopped it for ~140 ms at a time under the 5,000-stream
    storm, which showed in every target's time to first token, the floor's included."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


def run_command(name: str, run, args, succeeded, print_table) -> int:
    """A bench command's life: `run(args, workdir, children)` in a temporary directory, its children
    stopped however it ends (Ctrl-C and SIGTERM included), their logs shown when `succeeded(result)` is
    false, then the result as JSON (`args.json`) or through `print_table`. Returns the exit status."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # ends the run through the `finally` below
    quiet_collector()
    children: dict[str, Child] = {}
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        result = None
        try:
            result = asyncio.run(run(args, Path(tmp), children))
        except KeyboardInterrupt:
            return 130
        except TimeoutError:
            print(f"{name}: a phase took longer than its timeout", file=sys.stderr)
        finally:
            for child in children.values():
                child.stop()
        ok = result is not None and succeeded(result)
        if not ok:
            for child in children.values():
                print(f"--- {child.name} log, last lines:\n{child.log_tail()}", file=sys.stderr)
        if result is None:
            return 1
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print_table(result)
    return 0 if ok else 1
