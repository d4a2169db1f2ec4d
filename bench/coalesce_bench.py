"""What delta batching saves: the same fast stream (1 ms between tokens by default) through one gateway at
`--concurrency` streams, with stream_options.coalesce_ms at each of `--windows` (0, 16, 50), side by side
in one run. Phases alternate over `--rounds` so that drift on the machine hits every window alike.

Prints, per window: SSE events per stream, gateway CPU per stream, time to first content, and the
median over the rounds. Every stream is read to its end and checked: the whole text, the finish reason,
the usage chunk, then [DONE].

    python bench/coalesce_bench.py [--windows 0,16,50] [--rounds 2] [stream_bench.py's load options:
                                   --concurrency 100, --requests, --chunks-per-stream, --chunk-interval 0.001...]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import orjson

import stream_bench
from fake_upstream import TOKENS
from harness import BENCH_DIR, Child, commit, free_ports, machine_busy_seconds, run_command, wait_healthy

DEFAULT_INTERVAL = 0.001  # a fast model: 1000 tokens/s per stream
DEFAULT_CHUNKS = 100


class StreamFailed(Exception):
    pass


async def one_stream(session: aiohttp.ClientSession, url: str, body: bytes, expected_text: str) -> tuple[int, float]:
    """(events before [DONE], seconds to the first content) of one stream read to its end and checked."""
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
        if response.status != 200:
            raise StreamFailed(f"HTTP {response.status}: {(await response.text())[:300]}")
        ttfc = None
        buffer = b""
        events: list[bytes] = []
        while data := await response.content.readany():
            buffer += data
            *complete, buffer = buffer.split(b"\n\n")
            if ttfc is None and any(stream_bench._has_content(event) for event in complete):
                ttfc = time.perf_counter() - started
            events += complete
    if not events or events[-1] != b"data: [DONE]":
        raise StreamFailed(f"the stream did not end with [DONE] (its end: {events[-1:]!r})")
    text, finish, usage = [], None, None
    for event in events[:-1]:
        chunk = orjson.loads(event[6:])
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            text.append(choice["delta"].get("content") or "")
            finish = choice["finish_reason"] or finish
    if "".join(text) != expected_text or finish != "stop" or usage is None:
        raise StreamFailed(f"wrong answer: finish {finish!r}, usage {usage!r}, text {''.join(text)[:80]!r}...")
    return len(events) - 1, ttfc if ttfc is not None else time.perf_counter() - started


async def drive(url: str, window: int, args, requests: int) -> dict:
    """`--concurrency` workers streaming one request after another until `--requests` are done."""
    body = orjson.dumps({"model": "fake/gpt-4o-mini", "stream": True,
                         "stream_options": {"include_usage": True, "coalesce_ms": window},
                         "messages": [{"role": "user", "content": "Write a long story about a gateway."}]})
    expected = "".join(TOKENS[i % len(TOKENS)] for i in range(args.chunks_per_stream))
    events: list[int] = []
    ttfc: list[float] = []
    failures: list[str] = []
    remaining = requests
    spread = 0.0 if args.burst else args.chunks_per_stream * args.chunk_interval

    async def worker(session: aiohttp.ClientSession, k: int) -> None:
        nonlocal remaining
        await asyncio.sleep(spread * k / args.concurrency)
        while remaining > 0:
            remaining -= 1
            try:
                count, first = await one_stream(session, url, body, expected)
                events.append(count)
                ttfc.append(first)
            except (StreamFailed, aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{type(exc).__name__}: {exc}")

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session, k) for k in range(min(args.concurrency, requests))))
    return {"events": events, "ttfc": ttfc, "failures": failures}


async def run_phase(url: str, window: int, args, gateway: Child) -> dict:
    async with asyncio.timeout(args.phase_timeout):
        await drive(url, window, args, args.warmup)  # unmeasured: pools open, caches warm
        before, machine_before, started = gateway.cpu_times(), machine_busy_seconds(), time.perf_counter()
        tally = await drive(url, window, args, args.requests)
        elapsed = time.perf_counter() - started
        after, machine = gateway.cpu_times(), machine_busy_seconds() - machine_before
    cpu = (after[0] - before[0]) + (after[1] - before[1])
    streams = len(tally["events"])
    return {
        "window_ms": window,
        "streams": streams,
        "failures": len(tally["failures"]),
        "first_failure": tally["failures"][0] if tally["failures"] else "",
        "seconds": elapsed,
        "events_per_stream": statistics.mean(tally["events"]) if streams else float("nan"),
        "gateway_cpu_ms_per_stream": cpu * 1e3 / streams if streams else float("nan"),
        "gateway_cpu_us_per_upstream_chunk": cpu * 1e6 / (streams * (args.chunks_per_stream + 3)) if streams else float("nan"),
        "ttfc_p50_ms": stream_bench.percentile(tally["ttfc"], 50) * 1e3,
        "ttfc_p99_ms": stream_bench.percentile(tally["ttfc"], 99) * 1e3,
        "gateway_cores_busy": cpu / elapsed,
        "machine_cores_busy": machine / elapsed,
    }


async def bench(args, workdir: Path, children: dict[str, Child]) -> dict:
    upstream_port, gateway_port = free_ports(2)
    children["upstream"] = Child("fake upstream", [
        sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port),
        "--chunks-per-stream", str(args.chunks_per_stream), "--chunk-interval", str(args.chunk_interval),
    ], workdir / "upstream.log")
    config = workdir / "gateway.yaml"
    config.write_text(stream_bench.gateway_config(upstream_port, gateway_port, args.middlewares))
    children["gateway"] = Child("gateway", [
        sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(gateway_port),
    ], workdir / "gateway.log")
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, children["upstream"], upstream_port)
        await wait_healthy(session, children["gateway"], gateway_port)
    url = f"http://127.0.0.1:{gateway_port}/v2/chat/completions"
    phases: dict[int, list[dict]] = {window: [] for window in args.windows}
    for _ in range(args.rounds):
        for window in args.windows:
            phases[window].append(await run_phase(url, window, args, children["gateway"]))
    medians = {window: {key: statistics.median(p[key] for p in runs) for key in
                        ("events_per_stream", "gateway_cpu_ms_per_stream", "gateway_cpu_us_per_upstream_chunk",
                         "ttfc_p50_ms", "ttfc_p99_ms")} for window, runs in phases.items()}
    return {
        "settings": {"concurrency": args.concurrency, "requests": args.requests, "warmup": args.warmup,
                     "content_chunks_per_stream": args.chunks_per_stream, "chunk_interval_s": args.chunk_interval,
                     "windows_ms": args.windows, "rounds": args.rounds, "middlewares": args.middlewares,
                     "cpus": os.cpu_count(), "commit": commit()},
        "phases": {str(w): runs for w, runs in phases.items()},
        "medians": {str(w): m for w, m in medians.items()},
    }


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"{s['concurrency']} concurrent streams, {s['requests']} streams per phase (after {s['warmup']} warm-up), "
          f"{s['content_chunks_per_stream']} content chunks each (+ role, finish, usage), "
          f"{s['chunk_interval_s'] * 1e3:g} ms between tokens, middlewares [{', '.join(s['middlewares'])}], "
          f"{s['rounds']} round(s), {s['cpus']} CPUs, gateway at {s['commit']}")
    header = ("coalesce_ms", "events/stream", "gateway CPU ms/stream", "µs/upstream chunk", "TTFC p50 ms",
              "TTFC p99 ms", "stream s", "failures")
    print("{:<14}{:>14}{:>23}{:>19}{:>13}{:>13}{:>10}{:>10}".format(*header))
    for round_ in range(s["rounds"]):
        for window in s["windows_ms"]:
            p = result["phases"][str(window)][round_]
            print(f"{str(window) + ' #' + str(round_ + 1):<14}{p['events_per_stream']:>14.1f}"
                  f"{p['gateway_cpu_ms_per_stream']:>23.2f}{p['gateway_cpu_us_per_upstream_chunk']:>19.1f}"
                  f"{p['ttfc_p50_ms']:>13.2f}{p['ttfc_p99_ms']:>13.2f}"
                  f"{p['seconds'] * s['concurrency'] / max(1, p['streams']):>10.2f}{p['failures']:>10}")
    print("medians:")
    base = result["medians"][str(s["windows_ms"][0])]
    for window in s["windows_ms"]:
        m = result["medians"][str(window)]
        print(f"  coalesce_ms {window:>4}: {m['events_per_stream']:7.1f} events/stream "
              f"({m['events_per_stream'] / base['events_per_stream']:.2f}x), gateway CPU "
              f"{m['gateway_cpu_ms_per_stream']:.2f} ms/stream ({m['gateway_cpu_ms_per_stream'] / base['gateway_cpu_ms_per_stream']:.2f}x)")
    for window in s["windows_ms"]:
        for p in result["phases"][str(window)]:
            if p["failures"]:
                print(f"coalesce_ms {window}: {p['failures']} failed streams, first: {p['first_failure']}")
            if p["machine_cores_busy"] > (s["cpus"] or 1) * 0.9:
                print(f"note: coalesce_ms {window}: the machine was CPU-bound ({p['machine_cores_busy']:.2f} cores busy): "
                      "the upstream paces slower than asked, and each figure includes that")
                break


def _pop_option(argv: list[str], name: str, default: str) -> str:
    if name in argv:
        at = argv.index(name)
        value = argv[at + 1]
        del argv[at:at + 2]
        return value
    return default


def main(argv: list[str] | None = None) -> int:
    parser_argv = list(argv if argv is not None else sys.argv[1:])
    rounds = int(_pop_option(parser_argv, "--rounds", "2"))
    windows = [int(w) for w in _pop_option(parser_argv, "--windows", "0,16,50").split(",") if w]
    if "--chunk-interval" not in parser_argv:
        parser_argv += ["--chunk-interval", str(DEFAULT_INTERVAL)]
    if "--chunks-per-stream" not in parser_argv:
        parser_argv += ["--chunks-per-stream", str(DEFAULT_CHUNKS)]
    args = stream_bench.parse_args(parser_argv)
    args.rounds, args.windows = max(1, rounds), windows
    return run_command("coalesce-bench", bench, args, lambda result: not any(
        phase["failures"] for phases in result["phases"].values() for phase in phases), print_table)


if __name__ == "__main__":
    raise SystemExit(main())
