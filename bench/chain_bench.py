"""What the middleware chain costs: the same load through a gateway with no middleware and through one
with the full chain (normalize, ratelimit with a keyed client and its limits, moderate with rules), in
one run, against one fast fake OpenAI upstream.

Both gateways run side by side as child processes, pinned to CPU 0 (only one is loaded at a time), the
upstream and this load generator to CPU 1, as bench/compare.py does; the phases alternate (bare, full,
bare, full...) so that drift on the machine hits both alike (`--no-pin`, or one CPU: the three processes
share the cores). Unpaced, the ratio still moves between rounds, pinned or not: judge the chain on a paced
load. Prints each phase and the full chain's cost over the bare one: CPU per chunk and time to first chunk.

    python bench/chain_bench.py [--rounds 2] [--no-pin] [stream_bench.py's load options: --concurrency,
                                --requests, --chunks-per-stream, --chunk-interval, --burst...]
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
from pathlib import Path

import aiohttp

import stream_bench
from harness import BENCH_DIR, Child, can_pin, commit, free_ports, layout, pin_driver, pinned, run_command, wait_healthy

CLIENT_KEY = "gwk-bench-0123456789abcdef"
# Budgets no bench run reaches: every request pays for the checks, none is refused.
FULL_CHAIN = f"""
keys:
  - id: bench
    sha256: {hashlib.sha256(CLIENT_KEY.encode()).hexdigest()}
    models: ["fake/*"]
    limits: {{requests_per_minute: 100000000, tokens_per_minute: 1000000000000, concurrent_streams: 100000}}
limits: {{backend: memory}}
moderation:
  rules:
    - {{term: "forbidden phrase", action: block}}
    - {{term: "internal codename", action: redact}}
    - {{regex: "\\\\b\\\\d{{3}}-\\\\d{{2}}-\\\\d{{4}}\\\\b", action: redact, mask: "[redacted]"}}
middlewares: [normalize, ratelimit, moderate]
"""
CHAINS = {"bare": "middlewares: []\n", "full": FULL_CHAIN}


def gateway_config(upstream_port: int, gateway_port: int, chain: str) -> str:
    return (
        "server: {host: 127.0.0.1, port: %d, shutdown_grace: 1}\n"
        "providers:\n"
        "  - {name: fake, kind: openai, base_url: 'http://127.0.0.1:%d/v1', stream_options: true}\n"
        % (gateway_port, upstream_port)
    ) + CHAINS[chain]


async def bench(args, workdir: Path, children: dict[str, Child]) -> dict:
    upstream_port, *gateway_ports = free_ports(1 + len(CHAINS))
    if args.pin:
        pin_driver()  # the upstream, started next, inherits it
    children["upstream"] = Child("fake upstream", [
        sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port", str(upstream_port),
        "--chunks-per-stream", str(args.chunks_per_stream), "--chunk-interval", str(args.chunk_interval),
    ], workdir / "upstream.log")
    ports = dict(zip(CHAINS, gateway_ports))
    for chain, port in ports.items():
        config = workdir / f"{chain}.yaml"
        config.write_text(gateway_config(upstream_port, port, chain))
        children[chain] = Child(f"gateway ({chain} chain)", pinned([
            sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port),
        ], args.pin), workdir / f"{chain}.log")
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, children["upstream"], upstream_port)
        for chain, port in ports.items():
            await wait_healthy(session, children[chain], port)
    phases: dict[str, list[dict]] = {chain: [] for chain in CHAINS}
    for _ in range(args.rounds):
        for chain, port in ports.items():
            phase = await stream_bench.run_phase(chain, f"http://127.0.0.1:{port}/v2/chat/completions",
                                                 "fake/gpt-4o-mini", args, children,
                                                 headers={"Authorization": f"Bearer {CLIENT_KEY}"})
            phase["cpu_us_per_chunk_self"] = phase["cpu_us_per_chunk"][chain]
            phases[chain].append(phase)
    return summarize(args, phases)


def summarize(args, phases: dict[str, list[dict]]) -> dict:
    def median(chain: str, key: str) -> float:
        return statistics.median(phase[key] for phase in phases[chain])

    result = {
        "settings": {"concurrency": args.concurrency, "requests": args.requests, "warmup": args.warmup,
                     "content_chunks_per_stream": args.chunks_per_stream, "chunk_interval_s": args.chunk_interval,
                     "rounds": args.rounds, "cpus": os.cpu_count(), "layout": layout(args.pin),
                     "commit": commit()},
        "phases": phases,
    }
    for chain in CHAINS:
        result[chain] = {key: median(chain, key) for key in
                         ("cpu_us_per_chunk_self", "ttfc_p50_ms", "ttfc_p99_ms", "chunks_per_s")}
    result["full_over_bare"] = {
        "cpu_us_per_chunk_added": result["full"]["cpu_us_per_chunk_self"] - result["bare"]["cpu_us_per_chunk_self"],
        "cpu_ratio": result["full"]["cpu_us_per_chunk_self"] / result["bare"]["cpu_us_per_chunk_self"],
        "ttfc_p50_ms_added": result["full"]["ttfc_p50_ms"] - result["bare"]["ttfc_p50_ms"],
        "ttfc_p99_ms_added": result["full"]["ttfc_p99_ms"] - result["bare"]["ttfc_p99_ms"],
    }
    return result


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"{s['concurrency']} concurrent streams, {s['requests']} streams per phase (after {s['warmup']} warm-up), "
          f"{s['content_chunks_per_stream']} content chunks each, chunk interval {s['chunk_interval_s'] * 1e3:g} ms, "
          f"{s['rounds']} round(s), {s['cpus']} CPUs ({s['layout']}), gateway at {s['commit']}")
    print(f"{'phase':<14}{'chunks/s':>11}{'TTFC p50 ms':>13}{'TTFC p99 ms':>13}{'gateway µs/chunk':>18}{'failures':>10}")
    for round_ in range(s["rounds"]):
        for chain in CHAINS:
            phase = result["phases"][chain][round_]
            print(f"{chain + ' #' + str(round_ + 1):<14}{phase['chunks_per_s']:>11.0f}{phase['ttfc_p50_ms']:>13.2f}"
                  f"{phase['ttfc_p99_ms']:>13.2f}{phase['cpu_us_per_chunk_self']:>18.1f}{phase['failures']:>10}")
    added = result["full_over_bare"]
    print(f"full chain over bare (medians): CPU {added['cpu_us_per_chunk_added']:+.1f} µs/chunk "
          f"(x{added['cpu_ratio']:.2f}), TTFC p50 {added['ttfc_p50_ms_added']:+.2f} ms, "
          f"p99 {added['ttfc_p99_ms_added']:+.2f} ms")


def main(argv: list[str] | None = None) -> int:
    parser_argv = list(argv if argv is not None else sys.argv[1:])
    rounds = 2
    if "--rounds" in parser_argv:
        at = parser_argv.index("--rounds")
        rounds = int(parser_argv[at + 1])
        del parser_argv[at:at + 2]
    pin = "--no-pin" not in parser_argv
    parser_argv = [arg for arg in parser_argv if arg != "--no-pin"]
    args = stream_bench.parse_args(parser_argv)
    args.rounds = max(1, rounds)
    args.pin = pin and can_pin()
    return run_command("chain-bench", bench, args, lambda result: not any(
        phase["failures"] for phases in result["phases"].values() for phase in phases), print_table)


if __name__ == "__main__":
    raise SystemExit(main())
