"""Streaming benchmark: the gateway against a fast fake OpenAI upstream, in one run.

Starts the fake upstream (bench/fake_upstream.py) and the gateway (`python -m gateway serve`) as child
processes on 127.0.0.1, then drives `--concurrency` concurrent SSE streams from this process:
phase A straight at the fake upstream (the baseline), phase B through the gateway, same settings.
Prints requests/s, chunks/s and time to first chunk for each phase, what the gateway adds to the
time to first chunk, and the CPU each process spent per chunk (from /proc/<pid>/stat).

    python bench/stream_bench.py [--concurrency 100] [--requests N] [--chunks-per-stream 200]
                                 [--chunk-interval 0.0] [--middlewares normalize] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from harness import BENCH_DIR, CLK_TCK, Child, commit, free_ports, machine_busy_seconds, run_command, wait_healthy

DONE = b"data: [DONE]\n\n"
EXTRA_CHUNKS = 3  # besides the content chunks: the role chunk, the finish chunk and the usage chunk
AIM_CPU_US_PER_CHUNK = 15.0
AIM_ADDED_TTFC_P50_MS = 1.0
AIM_ADDED_TTFC_P99_MS = 5.0


# ---------------------------------------------------------------- the gateway's config


def gateway_config(upstream_port: int, gateway_port: int, middlewares: list[str]) -> str:
    return (
        "server: {host: 127.0.0.1, port: %d, shutdown_grace: 1}\n"
        "providers:\n"
        "  - {name: fake, kind: openai, base_url: 'http://127.0.0.1:%d/v1', stream_options: true}\n"
        "middlewares: [%s]\n" % (gateway_port, upstream_port, ", ".join(middlewares))
    )


# ---------------------------------------------------------------- load driver


class StreamFailed(Exception):
    pass


def _has_content(event: bytes) -> bool:
    payload = event.removeprefix(b"data: ")
    if not payload.startswith(b"{"):
        return False
    chunk = orjson.loads(payload)
    return any(isinstance(c.get("delta"), dict) and c["delta"].get("content") for c in chunk.get("choices") or ())


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, expected_chunks: int,
                     headers: dict[str, str] | None = None) -> float:
    """Reads one stream to its end; returns the seconds from sending the request to the first chunk with
    content. Raises StreamFailed unless it delivered exactly `expected_chunks` chunks and then [DONE]."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json", **(headers or {})}) as response:
        if response.status != 200:
            raise StreamFailed(f"HTTP {response.status}: {(await response.text())[:300]}")
        content = response.content
        ttfc = None
        unparsed = b""  # until the first content chunk: the stream's bytes not yet split into events
        events = 0
        tail = b""  # the last bytes read: a blank line split across two reads, and the closing [DONE]
        while data := await content.readany():
            # JSON never holds a raw newline, so each blank line ("\n\n") ends exactly one event.
            events += data.count(b"\n\n") + (tail[-1:] == b"\n" and data[:1] == b"\n")
            tail = data[-len(DONE):] if len(data) >= len(DONE) else (tail + data)[-len(DONE):]
            if ttfc is None:
                *complete, unparsed = (unparsed + data).split(b"\n\n")
                if any(_has_content(event) for event in complete):
                    ttfc = time.perf_counter() - started
                    unparsed = b""
    if tail != DONE:
        raise StreamFailed(f"the stream did not end with [DONE] (its end: {tail!r})")
    if events - 1 != expected_chunks:
        raise StreamFailed(f"{events - 1} chunks instead of {expected_chunks}")
    if ttfc is None:
        raise StreamFailed("no chunk had content")
    return ttfc


@dataclass
class Tally:
    ttfc: list[float] = field(default_factory=list)
    chunks: int = 0
    failures: int = 0
    first_failure: str = ""


async def drive(session: aiohttp.ClientSession, url: str, body: bytes, concurrency: int, requests: int,
                expected_chunks: int, spread: float, headers: dict[str, str] | None = None) -> Tally:
    """`concurrency` workers, each running one stream after another, until `requests` streams are done.
    Worker k starts k/concurrency of `spread` seconds late: streams of equal length started together
    would stay in lockstep, and every round would begin with a burst of `concurrency` new requests."""
    tally = Tally()
    remaining = requests

    async def worker(k: int) -> None:
        nonlocal remaining
        await asyncio.sleep(spread * k / concurrency)
        while remaining > 0:
            remaining -= 1
            try:
                tally.ttfc.append(await one_stream(session, url, body, expected_chunks, headers))
                tally.chunks += expected_chunks
            except (StreamFailed, aiohttp.ClientError, TimeoutError) as exc:
                tally.failures += 1
                tally.first_failure = tally.first_failure or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(worker(k) for k in range(min(concurrency, requests))))
    return tally


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


async def run_phase(name: str, url: str, model: str, args: argparse.Namespace,
                    children: dict[str, Child], headers: dict[str, str] | None = None) -> dict:
    body = orjson.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": "Write a long story about a gateway."}]})
    expected = args.chunks_per_stream + EXTRA_CHUNKS
    spread = 0.0 if args.burst else args.chunks_per_stream * args.chunk_interval  # one paced stream's length
    connector = aiohttp.TCPConnector(limit=0)  # one connection per live stream, as real clients have
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with asyncio.timeout(args.phase_timeout):
            # Warm-up at full concurrency: opens the pooled connections on both sides, warms the caches.
            await drive(session, url, body, args.concurrency, args.warmup, expected, spread, headers)
            before = {who: child.cpu_times() for who, child in children.items()}
            before["driver"] = os.times()[:2]
            machine_before = machine_busy_seconds()
            started = time.perf_counter()
            tally = await drive(session, url, body, args.concurrency, args.requests, expected, spread, headers)
            elapsed = time.perf_counter() - started
            after = {who: child.cpu_times() for who, child in children.items()}
            after["driver"] = os.times()[:2]
            machine = machine_busy_seconds() - machine_before
    # (user, system) seconds each process spent during the measured streams
    cpu = {who: (after[who][0] - before[who][0], after[who][1] - before[who][1]) for who in after}
    done = len(tally.ttfc)

    def per_chunk(seconds: float) -> float:
        return seconds * 1e6 / tally.chunks if tally.chunks else float("nan")

    return {
        "phase": name,
        "requests": done,
        "failures": tally.failures,
        "first_failure": tally.first_failure,
        "seconds": elapsed,
        "requests_per_s": done / elapsed,
        "chunks_per_s": tally.chunks / elapsed,
        "ttfc_p50_ms": percentile(tally.ttfc, 50) * 1e3,
        "ttfc_p99_ms": percentile(tally.ttfc, 99) * 1e3,
        "cpu_seconds": {who: user + system for who, (user, system) in cpu.items()},
        "cpu_us_per_chunk": {who: per_chunk(user + system) for who, (user, system) in cpu.items()},
        "cpu_user_us_per_chunk": {who: per_chunk(user) for who, (user, _) in cpu.items()},
        "cpu_system_us_per_chunk": {who: per_chunk(system) for who, (_, system) in cpu.items()},
        "cores_busy": sum(map(sum, cpu.values())) / elapsed,  # out of os.cpu_count(): near it, CPU-bound
        # Anything else running skews every figure: this should stay near 0.
        "other_cores_busy": max(0.0, machine - sum(map(sum, cpu.values()))) / elapsed,
    }


# ---------------------------------------------------------------- report


def summary(args: argparse.Namespace, baseline: dict, gateway: dict) -> dict:
    return {
        "settings": {"concurrency": args.concurrency, "requests": args.requests, "warmup": args.warmup,
                     "chunks_per_stream": args.chunks_per_stream + EXTRA_CHUNKS,
                     "content_chunks_per_stream": args.chunks_per_stream, "chunk_interval_s": args.chunk_interval,
                     "middlewares": args.middlewares, "burst": args.burst, "cpus": os.cpu_count(), "commit": commit()},
        "baseline": baseline,
        "gateway": gateway,
        "added_ttfc_p50_ms": gateway["ttfc_p50_ms"] - baseline["ttfc_p50_ms"],
        "added_ttfc_p99_ms": gateway["ttfc_p99_ms"] - baseline["ttfc_p99_ms"],
        "gateway_cpu_us_per_chunk": gateway["cpu_us_per_chunk"]["gateway"],
    }


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"{s['concurrency']} concurrent streams, {s['requests']} streams per phase (after {s['warmup']} warm-up), "
          f"{s['chunks_per_stream']} chunks per stream ({s['content_chunks_per_stream']} with content), "
          f"chunk interval {s['chunk_interval_s'] * 1e3:g} ms, middlewares [{', '.join(s['middlewares'])}], "
          f"{s['cpus']} CPUs, gateway at {s['commit']}")
    print()
    header = ("phase", "req/s", "chunks/s", "TTFC p50 ms", "TTFC p99 ms",
              "upstream µs/chunk", "gateway µs/chunk", "driver µs/chunk", "cores busy", "others busy")
    print("{:<24}{:>9}{:>11}{:>13}{:>13}{:>19}{:>18}{:>17}{:>12}{:>13}".format(*header))
    for label, phase in (("A fake upstream alone", result["baseline"]), ("B through the gateway", result["gateway"])):
        cpu = phase["cpu_us_per_chunk"]
        gateway_cpu = f"{cpu['gateway']:.1f}" if phase["phase"] == "gateway" else "-"
        print(f"{label:<24}{phase['requests_per_s']:>9.1f}{phase['chunks_per_s']:>11.0f}"
              f"{phase['ttfc_p50_ms']:>13.2f}{phase['ttfc_p99_ms']:>13.2f}{cpu['upstream']:>19.1f}"
              f"{gateway_cpu:>18}{cpu['driver']:>17.1f}{phase['cores_busy']:>12.2f}{phase['other_cores_busy']:>13.2f}")
    print()

    def verdict(value: float, aim: float) -> str:
        return "within aim" if value <= aim else "OVER aim"

    added50, added99, cpu = result["added_ttfc_p50_ms"], result["added_ttfc_p99_ms"], result["gateway_cpu_us_per_chunk"]
    gateway = result["gateway"]
    print(f"gateway adds to TTFC:  p50 {added50:+.2f} ms ({verdict(added50, AIM_ADDED_TTFC_P50_MS)} "
          f"<= {AIM_ADDED_TTFC_P50_MS:g} ms), p99 {added99:+.2f} ms ({verdict(added99, AIM_ADDED_TTFC_P99_MS)} "
          f"<= {AIM_ADDED_TTFC_P99_MS:g} ms)")
    print(f"gateway CPU per chunk: {cpu:.1f} µs = {gateway['cpu_user_us_per_chunk']['gateway']:.1f} user "
          f"+ {gateway['cpu_system_us_per_chunk']['gateway']:.1f} system "
          f"({verdict(cpu, AIM_CPU_US_PER_CHUNK)} <= {AIM_CPU_US_PER_CHUNK:g} µs)")
    if max(result["baseline"]["other_cores_busy"], gateway["other_cores_busy"]) > 0.1:
        print("note: other processes kept the CPUs busy during the run (others busy): the figures are skewed")
    if gateway["cpu_seconds"]["gateway"] * CLK_TCK < 100:
        print(f"note: the gateway used under 100 CPU ticks of {1e3 / CLK_TCK:g} ms in phase B: "
              "its µs/chunk is coarse; run more --requests")
    for phase in (result["baseline"], result["gateway"]):
        if phase["failures"]:
            print(f"phase {phase['phase']}: {phase['failures']} failed streams, first: {phase['first_failure']}")


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=100, help="concurrent streams (default 100)")
    parser.add_argument("--requests", type=int, default=None,
                        help="measured streams per phase (default: 10 x concurrency)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured streams before each phase (default: concurrency, at least 50)")
    parser.add_argument("--chunks-per-stream", type=int, default=200,
                        help="content chunks per stream; each also has a role, a finish and a usage chunk")
    parser.add_argument("--chunk-interval", type=float, default=0.0,
                        help="seconds the fake upstream waits between content chunks (default 0: CPU-bound)")
    parser.add_argument("--burst", action="store_true",
                        help="start all workers at once (default: paced streams start spread over one stream's length)")
    parser.add_argument("--middlewares", default="normalize",
                        help="the gateway's chain, comma-separated: normalize,ratelimit,moderate (default normalize)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds one stream may take")
    parser.add_argument("--phase-timeout", type=float, default=600.0, help="seconds one phase may take")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args(argv)
    args.middlewares = [m for m in args.middlewares.split(",") if m]
    if args.requests is None:
        args.requests = 10 * args.concurrency
    if args.warmup is None:
        args.warmup = max(50, args.concurrency)
    if min(args.concurrency, args.requests, args.chunks_per_stream) < 1 or args.chunk_interval < 0:
        parser.error("--concurrency, --requests and --chunks-per-stream must be at least 1, --chunk-interval >= 0")
    return args


async def bench(args: argparse.Namespace, workdir: Path, children: dict[str, Child]) -> dict:
    upstream_port, gateway_port = free_ports(2)
    children["upstream"] = Child("fake upstream", [
        sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port),
        "--chunks-per-stream", str(args.chunks_per_stream), "--chunk-interval", str(args.chunk_interval),
    ], workdir / "upstream.log")
    config = workdir / "gateway.yaml"
    config.write_text(gateway_config(upstream_port, gateway_port, args.middlewares))
    children["gateway"] = Child("gateway", [
        sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(gateway_port),
    ], workdir / "gateway.log")
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, children["upstream"], upstream_port)
        await wait_healthy(session, children["gateway"], gateway_port)
    baseline = await run_phase("baseline", f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                               "gpt-4o-mini", args, children)
    gateway = await run_phase("gateway", f"http://127.0.0.1:{gateway_port}/v2/chat/completions",
                              "fake/gpt-4o-mini", args, children)
    return summary(args, baseline, gateway)


def main(argv: list[str] | None = None) -> int:
    return run_command("stream-bench", bench, parse_args(argv),
                       lambda result: not (result["baseline"]["failures"] or result["gateway"]["failures"]),
                       print_table)


if __name__ == "__main__":
    raise SystemExit(main())
