"""Soak: many streams for minutes through the gateway, with faults at random on both sides of it.

Starts the faulty fake upstream (bench/faulty_upstream.py: an OpenAI and an Anthropic endpoint that
draw a fault per request) and the gateway (`python -m gateway serve`, short timeouts, a small
max_event_bytes) as child processes, then runs `--clients` concurrent clients for `--duration`
seconds: stream and non-stream requests, each client also misbehaving at random (disconnecting
after k chunks or before the answer, reading very slowly). Every answer's ending is classified:

  answer        [DONE] after a finish_reason chunk (non-stream: a 200 with a finished choice)
  error_event   [DONE] after an error event: the stream had begun, the failure is explained
  http_error    an HTTP error status with an OpenAI-style JSON error
  disconnected  the client went away on purpose
  BAD:<why>     anything else: no terminator, malformed events or bodies, hung past --client-timeout

At the end (clients stopped, a settle) it prints the gateway's RSS at the start (after --warmup
seconds) and the end, its runtime counters from /admin/health (requests in flight, upstream
connections held and pooled, tasks), the upstream's open connections and replies still running,
and the outcomes per fault. Exit status 1 when any ending was BAD, a request is still in flight,
or an upstream connection is still held (by the gateway or in a reply on the upstream).

    python bench/soak.py [--clients 50] [--duration 180] [--seed 1] [--faults ok=40,...] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from faulty_upstream import parse_weights
from harness import BENCH_DIR, Child, commit, free_ports, run_command, wait_healthy

OK_OUTCOMES = ("answer", "error_event", "http_error", "disconnected")
MODELS = {"openai": "up/gpt-4o-mini", "anthropic": "ant/claude-haiku-4-5", "fallback": "both"}
CLIENT_FAULTS = {"normal": 6, "disconnect": 3, "slow": 1}
# Upstream faults after which the answer is whole: the client must get it (or have left on its own).
# After any other fault, an "answer" would be a failure the gateway hid.
CLEAN_FAULTS = ("ok", "malformed_line")
SLOW_READ_BYTES = 64


def gateway_config(args: argparse.Namespace, upstream_port: int, gateway_port: int) -> str:
    timeouts = f"{{connect: 2, first_byte: {args.first_byte:g}, idle: {args.idle:g}, total: {args.total:g}}}"
    retry = f", retry: {{attempts: {args.retry_attempts}}}" if args.retry_attempts is not None else ""
    common = f"timeouts: {timeouts}, max_event_bytes: {args.max_event_bytes}{retry}"
    return (
        f"server: {{host: 127.0.0.1, port: {gateway_port}, sse_keepalive: {args.keepalive:g}, shutdown_grace: 1}}\n"
        "providers:\n"
        f"  - {{name: up, kind: openai, base_url: 'http://127.0.0.1:{upstream_port}/v1', {common}}}\n"
        f"  - {{name: ant, kind: anthropic, base_url: 'http://127.0.0.1:{upstream_port}', {common}}}\n"
        "routes: {both: [ant/claude-haiku-4-5, up/gpt-4o-mini]}\n"  # Anthropic first, OpenAI when it fails
        "middlewares: [normalize]\n"
    )


# ---------------------------------------------------------------- one request


@dataclass
class Request:
    tag: int
    kind: str  # openai or anthropic (that provider's wire format), or fallback (the route trying both)
    stream: bool
    client_fault: str
    disconnect_after: int = 0  # chunks read before a disconnecting client drops the connection
    disconnect_delay: float | None = None  # or: seconds before it drops, without waiting for the answer


class Bad(Exception):
    """The ending broke the gateway's promise; the message says how."""


def _check_error_body(body: bytes, status: int) -> str:
    try:
        error = orjson.loads(body)["error"]
        if not (isinstance(error["message"], str) and isinstance(error["type"], str)
                and "param" in error and "code" in error):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise Bad(f"http {status} without an OpenAI error: {body[:120]!r}") from None
    return f"{status} {error['code']}"


class _StreamReading:
    """Checks an SSE answer event by event: chunks, then one error event at most, then [DONE], then nothing."""

    def __init__(self) -> None:
        self.buffer = b""
        self.chunks = 0
        self.finished = False
        self.error: str | None = None
        self.done = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *events, self.buffer = self.buffer.split(b"\n\n")
        for event in events:
            self._event(event)

    def _event(self, event: bytes) -> None:
        if event.startswith(b":"):  # a keep-alive comment
            return
        if self.done:
            raise Bad(f"data after [DONE]: {event[:80]!r}")
        if not event.startswith(b"data: "):
            raise Bad(f"not a data event: {event[:80]!r}")
        payload = event[6:]
        if payload == b"[DONE]":
            self.done = True
            return
        if self.error is not None:
            raise Bad(f"an event after the error event: {event[:80]!r}")
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise Bad(f"malformed JSON event: {event[:80]!r}") from None
        if "error" in chunk:
            self.error = _check_error_body(payload, 200)
            return
        self.chunks += 1
        if any(choice.get("finish_reason") for choice in chunk.get("choices") or ()):
            self.finished = True

    def outcome(self) -> tuple[str, str]:
        if not self.done:
            raise Bad("no terminator: the stream ended without [DONE]")
        if self.buffer.strip():
            raise Bad(f"an unfinished event at the end: {self.buffer[:80]!r}")
        if self.error is not None:
            return "error_event", self.error
        if not self.finished:
            raise Bad("[DONE] with neither a finish_reason nor an error before it")
        return "answer", ""


async def _read_stream(response: aiohttp.ClientResponse, request: Request,
                       slow: random.Random | None) -> tuple[str, str]:
    reading = _StreamReading()
    content = response.content
    disconnects = request.client_fault == "disconnect" and request.disconnect_delay is None
    while True:
        if disconnects and reading.chunks >= request.disconnect_after and not reading.done:
            response.close()  # drops the connection mid-stream
            return "disconnected", f"after {reading.chunks} chunks"
        if slow is not None:
            data = await content.read(SLOW_READ_BYTES)
            await asyncio.sleep(slow.uniform(0.001, 0.02))
        else:
            data = await content.readany()
        if not data:
            return reading.outcome()
        reading.feed(data)


def _check_answer(body: bytes) -> None:
    try:
        answer = orjson.loads(body)
        choice = answer["choices"][0]
        if answer["object"] != "chat.completion" or not choice["finish_reason"] or "message" not in choice:
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        raise Bad(f"a 200 that is no chat.completion: {body[:120]!r}") from None


async def _exchange(session: aiohttp.ClientSession, url: str, request: Request,
                    slow: random.Random | None) -> tuple[str, str]:
    body = {"model": MODELS[request.kind], "stream": request.stream,
            "messages": [{"role": "user", "content": f"soak-{request.tag}: tell me about gateways"}]}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    async with session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as response:
        if response.status != 200:
            return "http_error", _check_error_body(await response.read(), response.status)
        content_type = response.headers.get("Content-Type", "")
        if request.stream:
            if not content_type.startswith("text/event-stream"):
                raise Bad(f"a 200 stream of {content_type!r}")
            return await _read_stream(response, request, slow)
        _check_answer(await response.read())
        return "answer", ""


async def run_request(session: aiohttp.ClientSession, url: str, request: Request, slow: random.Random | None,
                      client_timeout: float) -> tuple[str, str]:
    exchange = asyncio.ensure_future(_exchange(session, url, request, slow))
    try:
        async with asyncio.timeout(client_timeout):
            if request.disconnect_delay is None:
                return await exchange
            done, _ = await asyncio.wait((exchange,), timeout=request.disconnect_delay)
            if done:  # it ended before the client meant to leave
                return exchange.result()
            exchange.cancel()  # closes the connection, before or while the answer comes
            await asyncio.wait((exchange,))
            return "disconnected", f"after {request.disconnect_delay:.2f} s"
    except TimeoutError:
        return "BAD:hung", f"no ending within {client_timeout:g} s"
    except Bad as exc:
        return "BAD:" + str(exc).split(":")[0], str(exc)
    except aiohttp.ClientPayloadError as exc:
        return "BAD:no terminator", f"the connection dropped mid-answer: {exc}"
    except aiohttp.ClientError as exc:
        return "BAD:connection", f"{type(exc).__name__}: {exc}"
    finally:
        if not exchange.done():
            exchange.cancel()
            await asyncio.wait((exchange,))


# ---------------------------------------------------------------- the load


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    by_request: dict[int, tuple[Request, str, str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)  # a first detail per BAD outcome


def draw_request(rng: random.Random, tag: int, args: argparse.Namespace) -> Request:
    draw = rng.random()
    kind = "anthropic" if draw < args.anthropic_share else (
        "fallback" if draw < args.anthropic_share + args.fallback_share else "openai")
    stream = rng.random() < args.stream_share
    client_fault = rng.choices(list(args.client_faults), weights=list(args.client_faults.values()))[0]
    request = Request(tag, kind, stream, client_fault)
    if client_fault == "disconnect":
        if stream and rng.random() < 0.8:
            request.disconnect_after = rng.randint(0, args.max_chunks)
        else:  # before the answer: during the gateway's peek, or while a non-stream answer is combined
            request.disconnect_delay = rng.uniform(0.0, 1.0)
    return request


async def drive(args: argparse.Namespace, gateway_url: str, deadline: float, tally: Tally) -> None:
    rng = random.Random(args.seed)
    tags = iter(range(1, 1 << 62))
    timeout = aiohttp.ClientTimeout(total=None)
    # one connection per live request, as real clients have; the slow readers' buffer is small, so
    # that their socket really fills and the gateway has to wait on it
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout,
                                  read_bufsize=SLOW_READ_BYTES) as slow_session:

        async def client(k: int) -> None:
            await asyncio.sleep(k * 0.01)  # not all at once
            slow = random.Random(args.seed * 1000 + k)
            while time.monotonic() < deadline:
                request = draw_request(rng, next(tags), args)
                is_slow = request.client_fault == "slow"
                outcome, detail = await run_request(slow_session if is_slow else session, gateway_url, request,
                                                    slow if is_slow else None, args.client_timeout)
                tally.outcomes[outcome] += 1
                tally.by_request[request.tag] = (request, outcome, detail)
                if outcome.startswith("BAD") and outcome not in tally.examples:
                    tally.examples[outcome] = f"soak-{request.tag} ({request.kind}, stream={request.stream}, " \
                                              f"client {request.client_fault}): {detail}"

        await asyncio.gather(*(client(k) for k in range(args.clients)))


async def _get_json(url: str) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(url) as response:
            return await response.json(loads=orjson.loads)


async def settled_runtime(gateway_port: int, upstream_port: int, settle: float) -> tuple[dict, dict]:
    """The gateway's runtime counters and the upstream's stats once nothing is held, or after `settle` s."""
    deadline = time.monotonic() + settle
    while True:
        runtime = (await _get_json(f"http://127.0.0.1:{gateway_port}/admin/health"))["runtime"]
        upstream = await _get_json(f"http://127.0.0.1:{upstream_port}/stats")
        quiet = not (runtime["in_flight"] or runtime["upstream_connections"] or upstream["replying"]
                     or upstream["open_connections"] > runtime["upstream_pooled"])
        if quiet or time.monotonic() >= deadline:
            return runtime, upstream
        await asyncio.sleep(0.2)


async def soak(args: argparse.Namespace, workdir: Path, children: dict[str, Child]) -> dict:
    upstream_port, gateway_port = free_ports(2)
    children["upstream"] = Child("faulty upstream", [
        sys.executable, str(BENCH_DIR / "faulty_upstream.py"), "--port", str(upstream_port), "--seed", str(args.seed),
        "--faults", args.faults, "--max-chunks", str(args.max_chunks), "--chunk-interval", str(args.chunk_interval),
        "--giant-bytes", str(args.max_event_bytes * 4),
    ], workdir / "upstream.log")
    config = workdir / "gateway.yaml"
    config.write_text(gateway_config(args, upstream_port, gateway_port))
    gateway = children["gateway"] = Child("gateway", [
        sys.executable, "-m", "gateway", "serve", "--config", str(config), "--log-level", "WARNING",
    ], workdir / "gateway.log")
    async with aiohttp.ClientSession() as session:
        await wait_healthy(session, children["upstream"], upstream_port)
        await wait_healthy(session, gateway, gateway_port)
    idle_runtime = (await _get_json(f"http://127.0.0.1:{gateway_port}/admin/health"))["runtime"]

    started = time.monotonic()
    deadline = started + args.warmup + args.duration
    tally = Tally()
    rss_series: list[tuple[float, int]] = []

    async def sample_memory() -> None:
        while True:
            rss_series.append((time.monotonic() - started, gateway.memory_kib()["VmRSS"]))
            await asyncio.sleep(args.sample_every)

    sampler = asyncio.create_task(sample_memory())
    load = asyncio.create_task(drive(args, f"http://127.0.0.1:{gateway_port}/v1/chat/completions", deadline, tally))
    await asyncio.wait((load,), timeout=args.warmup)
    rss_start = gateway.memory_kib()["VmRSS"]
    await load
    sampler.cancel()
    elapsed = time.monotonic() - started
    runtime, upstream = await settled_runtime(gateway_port, upstream_port, args.settle)
    memory_end = gateway.memory_kib()
    drawn = await _get_json(f"http://127.0.0.1:{upstream_port}/drawn")
    return report(args, tally, drawn, elapsed, idle_runtime, runtime, upstream, rss_start, memory_end, rss_series)


# ---------------------------------------------------------------- report


def report(args: argparse.Namespace, tally: Tally, drawn: dict, elapsed: float, idle_runtime: dict, runtime: dict,
           upstream: dict, rss_start: int, memory_end: dict, rss_series: list) -> dict:
    by_fault: dict[str, Counter] = defaultdict(Counter)
    by_client_fault: dict[str, Counter] = defaultdict(Counter)
    disagreements: Counter = Counter()
    retried = 0
    for tag, (request, outcome, _) in tally.by_request.items():
        faults = drawn.get(str(tag), [])
        retried += len(faults) > 1
        # the last fault drawn decided the ending; none when the client left before the upstream was asked
        fault = faults[-1] if faults else "(no upstream request)"
        by_fault[fault][outcome] += 1
        if faults and not outcome.startswith("BAD") and \
                (outcome not in ("answer", "disconnected") if fault in CLEAN_FAULTS else outcome == "answer"):
            disagreements[f"{fault} -> {outcome}"] += 1
        by_client_fault[f"{request.client_fault} {'stream' if request.stream else 'non-stream'}"][outcome] += 1
    bad = sum(n for outcome, n in tally.outcomes.items() if outcome.startswith("BAD"))
    no_terminator = tally.outcomes.get("BAD:no terminator", 0)
    problems = []
    if bad:
        problems.append(f"{bad} request(s) ended badly ({no_terminator} without a terminator)")
    if disagreements:
        problems.append(f"{sum(disagreements.values())} ending(s) disagree with the upstream's fault: "
                        + ", ".join(f"{k} ({n})" for k, n in disagreements.most_common()))
    if runtime["in_flight"]:
        problems.append(f"{runtime['in_flight']} request(s) still in flight in the gateway")
    if runtime["upstream_connections"]:
        problems.append(f"the gateway still holds {runtime['upstream_connections']} upstream connection(s)")
    if upstream["replying"]:
        problems.append(f"the upstream is still writing {upstream['replying']} reply(ies)")
    if upstream["open_connections"] > runtime["upstream_pooled"]:
        problems.append(f"the upstream has {upstream['open_connections']} connection(s) open, "
                        f"the gateway pools only {runtime['upstream_pooled']}")
    return {
        "settings": {"clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
                     "seed": args.seed, "stream_share": args.stream_share, "anthropic_share": args.anthropic_share,
                     "fallback_share": args.fallback_share,
                     "client_faults": args.client_faults,
                     "upstream_faults": parse_weights(args.faults),
                     "timeouts": {"first_byte": args.first_byte, "idle": args.idle, "total": args.total},
                     "max_event_bytes": args.max_event_bytes, "keepalive": args.keepalive,
                     "retry_attempts": args.retry_attempts, "commit": commit()},
        "seconds": elapsed,
        "requests": len(tally.by_request),
        "requests_per_s": len(tally.by_request) / elapsed,
        "retried_upstream": retried,
        "outcomes": dict(tally.outcomes),
        "by_fault": {fault: dict(counts) for fault, counts in sorted(by_fault.items())},
        "by_client_fault": {fault: dict(counts) for fault, counts in sorted(by_client_fault.items())},
        "bad_examples": tally.examples,
        "disagreements": dict(disagreements),
        "no_terminator": no_terminator,
        "gateway_rss_kib": {"start": rss_start, "end": memory_end["VmRSS"], "peak": memory_end["VmHWM"]},
        "gateway_rss_series_kib": [[round(t, 1), kib] for t, kib in rss_series],
        "gateway_runtime_idle": idle_runtime,
        "gateway_runtime_end": runtime,
        "upstream_end": {k: upstream[k] for k in ("requests", "open_connections", "replying", "cut_off")},
        "upstream_faults_drawn": upstream["faults"],
        "problems": problems,
        "ok": not problems,
    }


def print_table(result: dict) -> None:
    s = result["settings"]
    retry = s["retry_attempts"] if s["retry_attempts"] is not None else "not configured"
    print(f"soak: {s['clients']} clients for {result['seconds']:.0f} s ({s['warmup_s']:g} s warm-up), "
          f"seed {s['seed']}, "
          f"{s['stream_share']:.0%} streams, {s['anthropic_share']:.0%} via the anthropic provider, "
          f"{s['fallback_share']:.0%} via the fallback route, "
          f"timeouts first_byte {s['timeouts']['first_byte']:g} idle {s['timeouts']['idle']:g} "
          f"total {s['timeouts']['total']:g} s, max_event_bytes {s['max_event_bytes']}, "
          f"retry {retry}, gateway at {s['commit']}")
    print(f"{result['requests']} requests ({result['requests_per_s']:.1f}/s), "
          f"{result['retried_upstream']} sent upstream more than once")
    print()
    outcomes = list(OK_OUTCOMES) + sorted(o for o in result["outcomes"] if o not in OK_OUTCOMES)
    width = max(14, *(len(o) + 2 for o in outcomes))

    def table(title: str, rows: dict) -> None:
        print(f"{title:<28}" + "".join(f"{o:>{width}}" for o in outcomes) + f"{'total':>8}")
        for name, counts in rows.items():
            print(f"{name:<28}" + "".join(f"{counts.get(o, 0):>{width}}" for o in outcomes)
                  + f"{sum(counts.values()):>8}")
        print()

    table("upstream fault (last drawn)", result["by_fault"])
    table("client behaviour", result["by_client_fault"])
    table("all", {"": result["outcomes"]})
    rss = result["gateway_rss_kib"]
    print(f"gateway RSS: start {rss['start'] / 1024:.1f} MiB (after the warm-up), end {rss['end'] / 1024:.1f} MiB "
          f"({(rss['end'] - rss['start']) / 1024:+.1f}), peak {rss['peak'] / 1024:.1f} MiB")
    series = result["gateway_rss_series_kib"]
    step = max(1, len(series) // 12)
    print("gateway RSS samples (s: MiB): " + "  ".join(f"{t:.0f}: {kib / 1024:.1f}" for t, kib in series[::step]))
    idle, end, up = result["gateway_runtime_idle"], result["gateway_runtime_end"], result["upstream_end"]
    print(f"gateway at the end: in_flight {end['in_flight']}, upstream connections held {end['upstream_connections']}, "
          f"pooled {end['upstream_pooled']}, tasks {end['tasks']} (idle before the load: {idle['tasks']})")
    print(f"upstream at the end: open connections {up['open_connections']}, replies still running {up['replying']}, "
          f"replies cut off by the gateway {up['cut_off']} of {up['requests']}")
    print(f"streams ended without a terminator: {result['no_terminator']}")
    if end["tasks"] > idle["tasks"]:
        print(f"note: {end['tasks'] - idle['tasks']} more asyncio task(s) in the gateway than before the load")
    for outcome, example in result["bad_examples"].items():
        print(f"first {outcome}: {example}")
    print()
    print("OK" if result["ok"] else "FAILED: " + "; ".join(result["problems"]))


# ---------------------------------------------------------------- main


def _weights(text: str, known: dict[str, float]) -> dict[str, float]:
    weights = dict(known)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in known:
            raise argparse.ArgumentTypeError(f"unknown client behaviour '{name}' (known: {', '.join(known)})")
        weights[name] = float(value) if value else 1.0
    if not any(weights.values()):
        raise argparse.ArgumentTypeError("every client behaviour has weight 0")
    return weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load after the warm-up (180)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the start RSS (10)")
    parser.add_argument("--seed", type=int, default=1, help="seeds the upstream's faults and the clients' draws")
    parser.add_argument("--faults", default="",
                        help="upstream fault weights, name=weight,... over the defaults (all=0 clears them); "
                             "see bench/faulty_upstream.py")
    parser.add_argument("--client-faults", default="",
                        help="client behaviour weights over normal=6,disconnect=3,slow=1")
    parser.add_argument("--stream-share", type=float, default=0.8, help="share of stream requests (0.8)")
    parser.add_argument("--anthropic-share", type=float, default=0.3,
                        help="share of requests for the anthropic-kind provider (0.3)")
    parser.add_argument("--fallback-share", type=float, default=0.2,
                        help="share of requests for the route 'both': anthropic, then openai (0.2)")
    parser.add_argument("--max-chunks", type=int, default=60, help="content chunks per upstream answer: 1 to this")
    parser.add_argument("--chunk-interval", type=float, default=0.005, help="upstream seconds between chunks")
    parser.add_argument("--first-byte", type=float, default=2.0, help="the gateway's first_byte timeout (2)")
    parser.add_argument("--idle", type=float, default=2.0, help="the gateway's idle timeout (2)")
    parser.add_argument("--total", type=float, default=20.0, help="the gateway's total timeout (20)")
    parser.add_argument("--max-event-bytes", type=int, default=16384, help="the gateway's max_event_bytes (16384)")
    parser.add_argument("--keepalive", type=float, default=1.0,
                        help="the gateway's sse_keepalive (1: below first_byte, so hangs commit a 200 first)")
    parser.add_argument("--retry-attempts", type=int, default=None,
                        help="adds `retry: {attempts: N}` to each provider (needs a gateway that knows the key)")
    parser.add_argument("--client-timeout", type=float, default=60.0,
                        help="seconds a request may take before it counts as hung (60)")
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds the end waits for in-flight requests and upstream connections to go (5)")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples (5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        parse_weights(args.faults)
        args.client_faults = _weights(args.client_faults, CLIENT_FAULTS)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.max_chunks < 1:
        parser.error("--clients and --max-chunks must be at least 1, --duration above 0, --warmup at least 0")
    if args.max_event_bytes < 1024:
        parser.error("--max-event-bytes must be at least 1024 (the gateway's minimum)")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_command("soak", soak, parse_args(argv), lambda result: result["ok"], print_table)


if __name__ == "__main__":
    raise SystemExit(main())
