"""The gateway beside its peers: the same loads through the mock alone, this gateway, Portkey and LiteLLM, in one run.

Starts one mock upstream (bench/fake_upstream.py: OpenAI, Anthropic and Gemini wire formats), this checkout's
gateway (`python -m gateway serve`), and the peers installed by bench/peers/setup.sh (LiteLLM's proxy,
Portkey's gateway), all on 127.0.0.1. Each load then runs through each target in turn: "direct" (the
mock alone: the floor, what serving the same stream costs at all), then the gateway and the peers, each
configured to the mock as its upstream, and "aiohttp" (bench/aiohttp_proxy.py: the mock's own stream
copied through one aiohttp server request and one ClientSession request, the part of the gateway's cost
that is aiohttp's). The gateway or peer runs on CPU 0, the mock and this load
generator on CPU 1. Each target is warmed up (its answers checked chunk by chunk) before it is measured.

    python bench/compare.py                    # the quick set: openai, paced, requests, alone, anthropic, gemini
    python bench/compare.py --full             # and the idle loads: storm (5,000 streams), idle (10,000)
    python bench/compare.py --loads storm --targets direct,gateway --json
    python bench/compare.py --targets direct,gateway --base main   # before and after a change, in one run

A peer that is not installed is reported as such and the rest still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import math
import os
import resource
import shutil
import statistics
import subprocess
import signal
import sys
import time
from pathlib import Path

import aiohttp

from compare_targets import (LOADS, PORTKEY_GEMINI_NOTE, WARM, Load, Peer, gateway_config, litellm_config,
                             litellm_version, portkey_version)
from harness import (BENCH_DIR, CLK_TCK, REPO, Child, can_pin, commit, free_ports, layout, machine_busy_seconds,
                     pin_driver, pinned, run_command)
from loadgen import Tally, closed_loop, percentile, ramp

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
DEFAULT_PEERS_DIR = Path(os.environ.get("GATEWAY_BENCH_PEERS", Path.home() / ".cache" / "gateway-bench-peers"))
NOT_INSTALLED = "not installed (run bench/peers/setup.sh)"
EXTRA_CHUNKS = 3  # an OpenAI client gets, besides the content chunks, a role, a finish and a usage chunk


# ---------------------------------------------------------------- /proc figures over a process tree


def tree_pids(root: int) -> list[int]:
    """The process and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(stat_path.split("/")[2]))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of the tree, reaped children included: fields 14-17 of /proc/<pid>/stat."""
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        total += sum(int(t) for t in fields[11:15])
    return total / CLK_TCK


def tree_rss_kib(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * PAGE_KIB
        except OSError:
            continue
    return total


class Service(Child):
    """A child whose whole process group is stopped (a peer may start processes of its own)."""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=8)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


# ---------------------------------------------------------------- the targets


async def wait_ready(child: Child, port: int, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
            try:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{child.name} did not answer {path} within {timeout:.0f}s:\n{child.log_tail()}")


async def start_peers(args: argparse.Namespace, workdir: Path, children: dict[str, Child], mock_port: int,
                      loads: list[Load]) -> list[Peer]:
    peers: list[Peer] = []
    config_loads = [*loads, WARM]
    ports = iter(free_ports(len(args.targets)))
    for name in args.targets:
        if name == "direct":
            peers.append(Peer("direct", "direct (floor)", port=mock_port, child=children["mock"]))
            continue
        port = next(ports)
        cwd = REPO
        if name in ("gateway", "base"):
            config = workdir / f"{name}.yaml"
            config.write_text(gateway_config(mock_port, port, config_loads))
            if name == "gateway":
                peer = Peer("gateway", "this gateway", commit(), port)
            else:  # the same gateway at another commit, from its own checkout
                cwd = workdir / "base-checkout"
                peer = Peer("base", "gateway at", commit(cwd), port)
            argv, env, ready = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                str(port), *(["--workers", str(args.gateway_workers)] if args.gateway_workers > 1
                                             else [])], None, "/healthz"
        elif name == "aiohttp":  # the floor of any aiohttp gateway: bench/aiohttp_proxy.py
            peer = Peer("aiohttp", "aiohttp pass-through", aiohttp.__version__, port)
            argv, env, ready = [sys.executable, str(BENCH_DIR / "aiohttp_proxy.py"), "--port", str(port),
                                "--upstream", f"http://127.0.0.1:{mock_port}"], None, "/healthz"
        elif name == "portkey":
            peer = Peer("portkey", "Portkey", portkey_version(args.peers_dir), port)
            entry = args.peers_dir / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
            node = shutil.which("node")
            if not peer.version or node is None:
                peer.missing = NOT_INSTALLED
                peers.append(peer)
                continue
            argv, env, ready = [node, str(entry), f"--port={port}", "--headless"], {"NODE_ENV": "production"}, "/"
        else:
            peer = Peer("litellm", "LiteLLM", litellm_version(args.peers_dir), port)
            executable = args.peers_dir / "litellm" / "bin" / "litellm"
            if not peer.version or not executable.exists():
                peer.missing = NOT_INSTALLED
                peers.append(peer)
                continue
            config = workdir / "litellm.yaml"
            config.write_text(litellm_config(mock_port, config_loads))
            argv = [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                    "--num_workers", "1"]
            env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True",
                   "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True", "NO_DOCS": "True"}
            ready = "/health/liveliness"
        if env:
            os.environ.update(env)  # Child passes this process's environment on
        child = Service(name, pinned(argv, args.pin), workdir / f"{name}.log", cwd)
        for key in env or ():
            os.environ.pop(key, None)
        children[name] = peer.child = child
        try:
            await wait_ready(child, port, ready, args.start_timeout)
        except RuntimeError as exc:
            peer.missing = f"did not start: {str(exc).splitlines()[0]}"
            child.stop()
        peers.append(peer)
    return peers


# ---------------------------------------------------------------- measuring one load through one target


def _ms(seconds: float) -> float:
    return seconds * 1e3


def _busy_figures(peer: Peer, mock: Child) -> dict:
    return {"target": tree_cpu_seconds(peer.child.pid), "mock": tree_cpu_seconds(mock.pid),
            "driver": sum(os.times()[:2]), "machine": machine_busy_seconds()}


def _result(load: Load, tally: Tally, elapsed: float, before: dict, after: dict, same_process: bool) -> dict:
    cpu = {who: after[who] - before[who] for who in ("target", "mock", "driver", "machine")}
    chunks = tally.completed * (load.chunks + EXTRA_CHUNKS)
    ours = cpu["target"] + cpu["driver"] + (0.0 if same_process else cpu["mock"])
    return {
        "completed": tally.completed,
        "failures": tally.failures,
        "first_failure": tally.first_failure[:300],
        "seconds": elapsed,
        "requests_per_s": tally.completed / elapsed if elapsed else math.nan,
        "chunks": chunks,
        "cpu_seconds": {who: cpu[who] for who in ("target", "mock", "driver")},
        "cpu_us_per_chunk": cpu["target"] * 1e6 / chunks if chunks else math.nan,
        "cpu_us_per_request": cpu["target"] * 1e6 / tally.completed if tally.completed else math.nan,
        "cpu_ticks": round(cpu["target"] * CLK_TCK),
        "ttft_p50_ms": _ms(percentile(tally.first_token, 50)),
        "ttft_p99_ms": _ms(percentile(tally.first_token, 99)),
        "other_cores_busy": max(0.0, cpu["machine"] - ours) / elapsed if elapsed else math.nan,
    }


async def measure(load: Load, peer: Peer, mock: Child, mock_port: int, args: argparse.Namespace) -> dict:
    target = peer.target(load, mock_port)
    same_process = peer.name == "direct"
    async with asyncio.timeout(args.load_timeout):
        # Warm-up: opens the pools on every side, and checks the target's answers chunk by chunk.
        warm_load = WARM if load.idle else load
        warm = await closed_loop(peer.target(warm_load, mock_port), warm_load.concurrency, warm_load.concurrency,
                                 args.load_timeout, warm_load.chunks, validate=True,
                                 request_timeout=args.request_timeout)
        if warm.failures:
            return {"warmup_failures": warm.failures, "first_failure": warm.first_failure[:300]}
        rss_before = tree_rss_kib(peer.child.pid)
        peer.baseline_rss_kib = peer.baseline_rss_kib or rss_before
        before = _busy_figures(peer, mock)
        started = time.perf_counter()
        if load.idle:
            peak = {"rss_kib": rss_before, "streaming": 0, "rss_at_most_streaming_kib": rss_before}

            def sample(tally: Tally) -> None:
                rss = tree_rss_kib(peer.child.pid)
                peak["rss_kib"] = max(peak["rss_kib"], rss)
                if tally.streaming > peak["streaming"]:
                    peak.update(streaming=tally.streaming, rss_at_most_streaming_kib=rss)

            tally = await ramp(target, load.streams, load.ramp_s, load.chunks, request_timeout=args.idle_timeout,
                               on_tick=sample)
        else:
            spread = (load.first_ms + load.interval_ms * (load.chunks - 1)) / 1e3
            tally = await closed_loop(target, load.concurrency, args.max_requests, args.duration, load.chunks,
                                      spread=spread, request_timeout=args.request_timeout)
        elapsed = time.perf_counter() - started
        after = _busy_figures(peer, mock)
    result = _result(load, tally, elapsed, before, after, same_process)
    if load.idle:  # memory per stream: when the most streams were held at once
        grown = peak["rss_at_most_streaming_kib"] - peer.baseline_rss_kib
        result.update(streams=load.streams, rss_before_kib=rss_before, rss_baseline_kib=peer.baseline_rss_kib,
                      rss_peak_kib=peak["rss_kib"],
                      rss_at_most_streaming_kib=peak["rss_at_most_streaming_kib"], most_streaming=peak["streaming"],
                      kib_per_stream=grown / peak["streaming"] if peak["streaming"] else math.nan)
    return result


# ---------------------------------------------------------------- the run


def raise_open_files(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(needed, hard)))
        except (ValueError, OSError):  # not root: as far as the hard limit goes
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {model}, Linux {os.uname().release}, Python {sys.version.split()[0]}"


async def bench(args: argparse.Namespace, workdir: Path, children: dict[str, Child]) -> dict:
    loads = [LOADS[name] for name in args.loads]
    biggest = max((load.streams or load.concurrency for load in loads), default=0)
    open_files = raise_open_files(max(4 * biggest + 1024, 8192))  # children inherit it
    if args.pin:
        pin_driver()  # the mock, started next, inherits it
    mock_port, = free_ports(1)
    mock = children["mock"] = Service("mock upstream", [sys.executable, str(BENCH_DIR / "fake_upstream.py"),
                                                        "--port", str(mock_port), "--backlog", "8192"],
                                      workdir / "mock.log")
    await wait_ready(mock, mock_port, "/healthz", args.start_timeout)
    if args.base:
        base_checkout(args.base, workdir / "base-checkout")
    peers = await start_peers(args, workdir, children, mock_port, loads)
    results: dict[str, dict[str, dict]] = {}
    for load in loads:
        runs: dict[str, list[dict]] = {peer.name: [] for peer in peers}
        for round_ in range(args.rounds):  # the targets take turns, so that drift hits them alike
            for peer in peers:
                if peer.missing:
                    runs[peer.name] = [{"missing": peer.missing}]
                    continue
                if not args.json:
                    print(f"  {load.name}: {peer.name}" + (f" (round {round_ + 1})" if args.rounds > 1 else "")
                          + " ...", file=sys.stderr, flush=True)
                try:
                    runs[peer.name].append(await measure(load, peer, mock, mock_port, args))
                except TimeoutError:
                    runs[peer.name].append({"timeout": f"longer than --load-timeout {args.load_timeout:g} s"})
                await asyncio.sleep(args.settle)  # lets the closed connections' CPU settle before the next target
        results[load.name] = {name: combined(target_runs) for name, target_runs in runs.items()}
    if args.keep_logs:
        args.keep_logs.mkdir(parents=True, exist_ok=True)
        for child in children.values():
            shutil.copy(child.log_path, args.keep_logs / child.log_path.name)
    return {
        "settings": {"loads": {load.name: load.__dict__ | {"segment": load.segment} for load in loads},
                     "duration_s": args.duration, "rounds": args.rounds, "pinned": args.pin, "layout": layout(args.pin),
                     "gateway_workers": args.gateway_workers,
                     "machine": machine(), "open_files_limit": open_files[0], "commit": commit()},
        "targets": {peer.name: {"label": peer.label, "version": peer.version, "missing": peer.missing}
                    for peer in peers},
        "results": results,
    }


MEMORY_FIGURES = ("rss_before_kib", "rss_baseline_kib", "rss_peak_kib", "rss_at_most_streaming_kib", "most_streaming",
                  "kib_per_stream")


def combined(runs: list[dict]) -> dict:
    """One target's rounds of one load: each figure's median, the streams counted over every round; a
    round that did not complete stands for them all. Memory is the first round's: a process keeps what an
    earlier round made it allocate, so a later round's growth over the first baseline is not its own."""
    failed = [run for run in runs if "completed" not in run]
    if failed or len(runs) == 1:
        return (failed or runs)[0]
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(run[key] for run in runs)
    for key in ("completed", "failures", "chunks", "cpu_ticks", "streams"):
        if key in runs[0]:
            out[key] = sum(run[key] for run in runs)
    for key in MEMORY_FIGURES:
        if key in runs[0]:
            out[key] = runs[0][key]
    out["first_failure"] = next((run["first_failure"] for run in runs if run["first_failure"]), "")
    out["rounds"] = len(runs)
    return out


def base_checkout(rev: str, path: Path) -> None:
    """A checkout of `rev` at `path`, for the `base` target: a detached git worktree, pruned once the run's
    folder is gone (`git worktree prune`, which every run does first)."""
    subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False)
    done = subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), rev], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"--base {rev}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'git failed'}")


# ---------------------------------------------------------------- the table


def _cell(results: dict, name: str, figure) -> str:
    r = results.get(name, {})
    if "missing" in r:
        return r["missing"] if r["missing"] == NOT_INSTALLED else "not measured"
    if "timeout" in r:
        return "timed out"
    if "warmup_failures" in r:
        return "wrong answers"
    value = figure(r, results.get("direct"))
    return value if isinstance(value, str) else f"{value}"


def _ratio(value: float, floor: float) -> str:
    return f" ({value / floor:.2f}x)" if floor and not math.isnan(floor) and not math.isnan(value) else ""


def _direct(floor: dict | None, key: str) -> float:
    return floor.get(key, math.nan) if floor and "completed" in floor else math.nan


def figures(load: Load) -> list[tuple[str, object]]:
    def cpu(r, floor):
        return f"{r['cpu_us_per_chunk']:.1f}{_ratio(r['cpu_us_per_chunk'], _direct(floor, 'cpu_us_per_chunk'))}"

    def per_request(r, floor):
        return f"{r['cpu_us_per_request']:.0f}{_ratio(r['cpu_us_per_request'], _direct(floor, 'cpu_us_per_request'))}"

    def rate(r, floor):
        return f"{r['requests_per_s']:.0f}{_ratio(r['requests_per_s'], _direct(floor, 'requests_per_s'))}"

    def ttft(r, floor):
        return f"{r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f}"

    def added(r, floor):
        return (f"{r['ttft_p50_ms'] - _direct(floor, 'ttft_p50_ms'):+.1f} / "
                f"{r['ttft_p99_ms'] - _direct(floor, 'ttft_p99_ms'):+.1f}")

    def completed(r, floor):
        total = r.get("streams", r["completed"] + r["failures"])
        return f"{r['completed']} of {total}"

    def memory(r, floor):
        return f"{r['kib_per_stream']:.1f} ({r['most_streaming']} open)"

    rows: list[tuple[str, object]] = [("CPU us/request (x floor)", per_request) if load.per_request
                                      else ("CPU us/chunk (x floor)", cpu)]
    if load.idle:
        rows += [("completed", completed), ("KB per stream (streams open)", memory),
                 ("TTFT p50 / p99 ms", ttft), ("added TTFT p50 / p99 ms", added)]
    else:
        rows += [("requests/s (x direct)", rate), ("TTFT p50 / p99 ms", ttft),
                 ("added TTFT p50 / p99 ms", added), ("completed", completed)]
    return rows


def print_table(result: dict) -> None:
    s = result["settings"]
    targets = result["targets"]
    names = list(targets)

    def header(name: str) -> str:
        t = targets[name]
        return t["label"] + (f" {t['version']}" if t["version"] and name != "gateway" else "")

    rounds = f"; medians of {s['rounds']} rounds" if s.get("rounds", 1) > 1 else ""
    workers = f" as {s['gateway_workers']} workers" if s.get("gateway_workers", 1) > 1 else ""
    print(f"# {s['machine']}; {s['layout']}; gateway at {s['commit']}{workers}{rounds}")
    print()
    print("| load | figure | " + " | ".join(header(n) for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for load_name, results in result["results"].items():
        load = LOADS[load_name]
        for i, (label, figure) in enumerate(figures(load)):
            cells = [_cell(results, name, figure) for name in names]
            print(f"| {load.title if i == 0 else ''} | {label} | " + " | ".join(cells) + " |")
    notes = []
    limit = s.get("open_files_limit", 0)
    for load_name in result["results"]:
        load = LOADS[load_name]
        # A proxy holds two descriptors a stream (the client's connection and its upstream one), and some more
        failed = any(r.get("failures") for r in result["results"][load_name].values())
        if load.idle and limit and limit < 2 * load.streams + 100 and failed:
            notes.append(f"{load_name}: the open-files limit is {limit} (as far as this process could raise it): "
                         f"a proxy holding {load.streams} streams in one process needs more than {2 * load.streams}, "
                         "so some of the failures below may be its limit ('Too many open files' in its log)"
                         + (f" (the gateway ran as {s['gateway_workers']} workers, each holding about "
                            f"1/{s['gateway_workers']} of them)" if s.get("gateway_workers", 1) > 1 else ""))
    for load_name, results in result["results"].items():
        for name, r in results.items():
            if r.get("first_failure"):
                notes.append(f"{load_name} / {name}: {r.get('failures', r.get('warmup_failures'))} failed, "
                             f"first: {r['first_failure']}")
            if r.get("other_cores_busy", 0) > 0.1:
                notes.append(f"{load_name} / {name}: other processes used {r['other_cores_busy']:.2f} cores meanwhile")
            if "cpu_ticks" in r and r["cpu_ticks"] < 100:
                notes.append(f"{load_name} / {name}: only {r['cpu_ticks']} CPU ticks measured: coarse")
            if name == "portkey" and LOADS[load_name].upstream == "gemini" and "completed" in r:
                notes.append(f"{load_name} / {name}: {PORTKEY_GEMINI_NOTE}")
    if notes:
        print()
        for note in notes:
            print(f"note: {note}")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default=None,
                        help=f"comma-separated, of: {', '.join(LOADS)} (default: the quick set, "
                             f"{', '.join(n for n, load in LOADS.items() if load.quick)})")
    parser.add_argument("--full", action="store_true", help="every load, the idle ones included")
    parser.add_argument("--targets", default="direct,gateway,aiohttp,portkey,litellm",
                        help="comma-separated, of: direct, gateway, base (with --base), aiohttp (bench/aiohttp_proxy.py: "
                             "the least an aiohttp gateway does), portkey, litellm (default all)")
    parser.add_argument("--base", metavar="REV", default=None,
                        help="also measure the gateway at this commit or branch (a temporary git worktree), "
                             "right after this checkout's, on every load: before and after figures in one run")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR,
                        help=f"where bench/peers/setup.sh installed the peers (default {DEFAULT_PEERS_DIR})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each load this many times, the targets taking turns, and show each figure's "
                             "median (default 1): on a machine whose speed drifts, 3 makes the ratios steadier")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds each closed-loop load starts new streams for, per target (default 10)")
    parser.add_argument("--max-requests", type=int, default=100_000, help="streams per closed-loop load at most")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds one busy stream may take")
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="seconds one idle stream may take")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="seconds one load may take per target")
    parser.add_argument("--start-timeout", type=float, default=90.0, help="seconds a target may take to start")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of quiet between two measurements")
    parser.add_argument("--gateway-workers", type=int, default=1, metavar="N",
                        help="run the gateway (and base) as `serve --workers N`, all on the gateway's CPU: each "
                             "process then holds 1/N of the open files (the idle load needs more than 20,000 in one)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the children's logs into this folder")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.full:
        args.loads = ",".join(LOADS)
    args.loads = [n for n in (args.loads or ",".join(n for n, load in LOADS.items() if load.quick)).split(",") if n]
    args.targets = [n for n in args.targets.split(",") if n]
    for name in args.loads:
        if name not in LOADS:
            parser.error(f"unknown load {name!r}: one of {', '.join(LOADS)}")
    for name in args.targets:
        if name not in ("direct", "gateway", "base", "aiohttp", "portkey", "litellm"):
            parser.error(f"unknown target {name!r}")
    if args.base and "base" not in args.targets:
        at = args.targets.index("gateway") + 1 if "gateway" in args.targets else len(args.targets)
        args.targets.insert(at, "base")
    if "direct" in args.targets:  # the floor first, then the others in the order given
        args.targets = ["direct", *(n for n in args.targets if n != "direct")]
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    if args.pin and not can_pin():
        parser.error("taskset (util-linux) is needed to pin the targets; or run with --no-pin")
    if (min(args.duration, args.request_timeout, args.idle_timeout, args.load_timeout) <= 0 or args.max_requests < 1
            or args.rounds < 1 or args.gateway_workers < 1):
        parser.error("durations and timeouts must be positive, --max-requests, --rounds and --gateway-workers at "
                     "least 1")
    return args


def succeeded(result: dict) -> bool:
    return all("completed" in r or r.get("missing") == NOT_INSTALLED
               for results in result["results"].values() for r in results.values())


def main(argv: list[str] | None = None) -> int:
    return run_command("compare", bench, parse_args(argv), succeeded, print_table)


if __name__ == "__main__":
    raise SystemExit(main())
