"""Instructions per request and per chunk, counted by valgrind's callgrind: the same figure on every run.

CPU time moves by 10% between runs of bench/compare.py on the same machine, and by up to 2x between
machines, so a change worth a few microseconds a request cannot be told from noise there. callgrind
counts the user-space instructions a process runs (not the kernel's: the socket reads and writes
are outside it), and for the same code, inputs and environment the count repeats to within 0.1%.
It is the figure to decide a small change on; compare.py's CPU time is the one to report.

Each target runs alone under callgrind (about 50x slower), on CPU 0, with the mock upstream and this
load generator on CPU 1, as in compare.py. After a warm-up its counters are zeroed, a fixed number of
streams run (8 at a time, each read to its end and checked), and the counters are dumped:

    python bench/instructions.py                          # requests, openai, anthropic, gemini loads
    python bench/instructions.py --base main --loads requests
    python bench/instructions.py --targets gateway,aiohttp --streams 2000
    python bench/instructions.py --loads requests --targets gateway --gateway-config "middlewares: []"

Targets: direct (the mock itself, asked in its own format: the floor), gateway (this checkout), base
(this gateway at --base), aiohttp (bench/aiohttp_proxy.py). Loads are compare.py's (compare_targets.py);
a per-request load's figure is instructions per request, the others' per content chunk. Needs valgrind
(Debian's package `valgrind`, which has `callgrind_control`).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import yaml

from compare import base_checkout, wait_ready
from compare_targets import LOADS, Load, Peer, gateway_config
from harness import BENCH_DIR, REPO, Child, commit, free_ports, pin_driver, pinned, run_command
from loadgen import closed_loop

TARGETS = ("direct", "gateway", "base", "aiohttp")
DEFAULT_LOADS = ("requests", "openai", "anthropic", "gemini")
CONCURRENCY = 8
START_TIMEOUT = 180.0  # a gateway under callgrind takes 10 to 30 s to import and start


def under_callgrind(argv: list[str], out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]


def callgrind_control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True, timeout=60)


def dumped_instructions(out: Path) -> int:
    """The instructions in the dump `callgrind_control -d` wrote (`<out>.1`, the first after the start)."""
    for line in Path(f"{out}.1").read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"no summary line in {out}.1")


def with_overrides(config: str, overrides: dict | None) -> str:
    """compare.py's gateway configuration with `--gateway-config`'s top-level sections in place of its own."""
    if not overrides:
        return config
    return yaml.safe_dump({**yaml.safe_load(config), **overrides}, sort_keys=False)


async def measure(name: str, load: Load, args: argparse.Namespace, workdir: Path, children: dict[str, Child]) -> dict:
    """One target on one load: its instructions over `args.streams` streams, after a warm-up."""
    mock_port, port = free_ports(2)
    out = workdir / f"{name}-{load.name}.callgrind"
    mock_argv = [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(mock_port)]
    if name == "direct":
        mock = children["mock"] = Child("mock upstream", pinned(under_callgrind(mock_argv, out), args.pin),
                                        workdir / "mock.log")
        counted = mock
    else:
        mock = children["mock"] = Child("mock upstream", mock_argv, workdir / "mock.log")
    await wait_ready(mock, mock_port, "/healthz", START_TIMEOUT)
    if name in ("gateway", "base"):
        config = workdir / f"{name}.yaml"
        config.write_text(with_overrides(gateway_config(mock_port, port, [load]), args.gateway_config))
        argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)]
        cwd = REPO if name == "gateway" else workdir / "base-checkout"
    elif name == "aiohttp":
        argv = [sys.executable, str(BENCH_DIR / "aiohttp_proxy.py"), "--port", str(port),
                "--upstream", f"http://127.0.0.1:{mock_port}"]
        cwd = REPO
    if name != "direct":
        counted = children[name] = Child(name, pinned(under_callgrind(argv, out), args.pin), workdir / f"{name}.log",
                                         cwd=cwd)
        await wait_ready(counted, port, "/healthz", START_TIMEOUT)
    target = Peer(name, name, port=mock_port if name == "direct" else port).target(load, mock_port)
    try:
        warm = await closed_loop(target, CONCURRENCY, args.warmup, 3600, load.chunks, validate=True,
                                 request_timeout=args.request_timeout)
        callgrind_control("-z", counted.pid)
        tally = await closed_loop(target, CONCURRENCY, args.streams, 3600, load.chunks, validate=True,
                                  request_timeout=args.request_timeout)
        callgrind_control("-d", counted.pid)
        instructions = dumped_instructions(out)
    finally:
        for child_name in (name, "mock"):
            child = children.pop(child_name, None)
            if child is not None:
                child.stop()
    failures = warm.failures + tally.failures
    per_stream = instructions / tally.completed if tally.completed else float("nan")
    return {"streams": tally.completed, "failures": failures,
            "first_failure": warm.first_failure or tally.first_failure,
            "per_stream": per_stream, "figure": per_stream if load.per_request else per_stream / load.chunks}


async def bench(args: argparse.Namespace, workdir: Path, children: dict[str, Child]) -> dict:
    if args.pin:
        pin_driver()
    if args.base:
        base_checkout(args.base, workdir / "base-checkout")
    results: dict[str, dict[str, dict]] = {}
    versions = {"gateway": commit(), "base": commit(workdir / "base-checkout") if args.base else "",
                "aiohttp": aiohttp.__version__, "direct": ""}
    for load_name in args.loads:
        load = LOADS[load_name]
        results[load_name] = {}
        for name in args.targets:
            print(f"  {load_name}: {name} ...", file=sys.stderr, flush=True)
            results[load_name][name] = await measure(name, load, args, workdir, children)
    return {"targets": args.targets, "versions": versions, "results": results, "streams": args.streams,
            "gateway_config": args.gateway_config}


def print_table(result: dict) -> None:
    targets = result["targets"]
    labels = {"direct": "direct (floor)", "gateway": f"this gateway {result['versions']['gateway']}",
              "base": f"gateway at {result['versions']['base']}", "aiohttp": f"aiohttp pass-through "
              f"{result['versions']['aiohttp']}"}
    print(f"# instructions counted by callgrind, {result['streams']} streams a target, {CONCURRENCY} at a time")
    if result.get("gateway_config"):
        print(f"# the gateway's configuration (and the base's) changed by: {result['gateway_config']}")
    print("| load | figure | " + " | ".join(labels[t] for t in targets) + " |")
    print("|---|---|" + "---|" * len(targets))
    for load_name, by_target in result["results"].items():
        load = LOADS[load_name]
        figure = "instructions/request" if load.per_request else "instructions/chunk"
        floor = by_target.get("direct", {}).get("figure")
        cells = []
        for name in targets:
            value = by_target[name]["figure"]
            ratio = f" ({value / floor:.2f}x)" if floor else ""
            cells.append(f"{value:,.0f}{ratio}")
        # the load's name, not its title: its title's concurrency is compare.py's, not this command's
        print(f"| {load_name}, {load.chunks} content chunk(s) a stream | {figure} (x floor) | " + " | ".join(cells)
              + " |")
        if "gateway" in by_target and "base" in by_target:
            print(f"|  | this gateway / base | {by_target['gateway']['figure'] / by_target['base']['figure']:.3f} |"
                  + " |" * (len(targets) - 1))
    for load_name, by_target in result["results"].items():
        for name, r in by_target.items():
            if r["failures"]:
                print(f"note: {load_name} / {name}: {r['failures']} stream(s) failed, "
                      f"first: {r['first_failure'][:300]}")


def succeeded(result: dict) -> bool:
    return all(r["failures"] == 0 and r["streams"] > 0 for by in result["results"].values() for r in by.values())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default=",".join(DEFAULT_LOADS),
                        help=f"comma-separated, of: {', '.join(n for n, l in LOADS.items() if not l.idle)}")
    parser.add_argument("--targets", default="direct,gateway,aiohttp",
                        help="comma-separated, of: direct, gateway, base (with --base), aiohttp")
    parser.add_argument("--base", help="also count the gateway at this commit or branch (a temporary git worktree)")
    parser.add_argument("--streams", type=int, default=500, help="streams counted per target and load")
    parser.add_argument("--warmup", type=int, default=200, help="streams before the counters are zeroed")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="seconds a stream may take")
    parser.add_argument("--gateway-config", metavar="YAML",
                        help="top-level sections that replace the gateway's own (and the base's), to count what a "
                             "feature costs: 'logging: {level: WARNING}' (no access line), 'middlewares: []'")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the processes to CPUs")
    parser.add_argument("--json", action="store_true", help="the result as JSON")
    args = parser.parse_args(argv)
    if args.gateway_config is not None:
        try:
            args.gateway_config = yaml.safe_load(args.gateway_config)
        except yaml.YAMLError as exc:
            parser.error(f"--gateway-config is not YAML: {str(exc).splitlines()[0]}")
        if not isinstance(args.gateway_config, dict):
            parser.error("--gateway-config must be a mapping of top-level sections, e.g. 'middlewares: []'")
    args.loads = [name.strip() for name in args.loads.split(",") if name.strip()]
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    for name in args.loads:
        if name not in LOADS or LOADS[name].idle:
            parser.error(f"unknown or idle load '{name}'")
    for name in args.targets:
        if name not in TARGETS:
            parser.error(f"unknown target '{name}'")
    if "base" in args.targets and not args.base:
        parser.error("the base target needs --base REV")
    if args.base and "base" not in args.targets:
        args.targets.insert(args.targets.index("gateway") + 1 if "gateway" in args.targets else len(args.targets),
                            "base")
    if args.streams < 1 or args.warmup < 0 or args.request_timeout <= 0:
        parser.error("--streams must be at least 1, --warmup not negative, --request-timeout positive")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command("instructions", bench, parse_args(argv), succeeded, print_table)


if __name__ == "__main__":
    raise SystemExit(main())
