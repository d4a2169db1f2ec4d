"""bench/compare.py's loads, and how each target is configured to the mock and asked for a load's stream.

Every load's upstream is one of the mock's wire formats (bench/fake_upstream.py): OpenAI's chat
completions, Anthropic's Messages or Gemini's streamGenerateContent. "direct" asks the mock in that
format; the gateway and the peers are asked in OpenAI's format and translate.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path

import orjson

from harness import Child
from loadgen import Target

PROMPT = [{"role": "user", "content": "Write a long story about a gateway."}]
OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL = "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"
# LiteLLM refuses to start without a strong master key; this one guards a proxy on loopback for one run.
LITELLM_MASTER_KEY = "sk-bench-" + "5f0c8e2a9b7d4c1e" * 3
# Portkey's `google` provider asks for `:streamGenerateContent?key=...` without `alt=sse`, the JSON-array
# stream; the mock answers every request in the SSE form, which Portkey's reader (split on CRLF, strip
# `data: `) takes as well. Its OpenAI answer then ends without `data: [DONE]`: the chunk with the
# finish_reason, and the end of the body, are its ending.
PORTKEY_GEMINI_NOTE = ("Portkey asks Gemini without alt=sse (the JSON-array stream) and is answered SSE; "
                       "it sends no [DONE] after a Google stream, so its ending is checked by the finish_reason")


# ---------------------------------------------------------------- the loads


@dataclass(frozen=True)
class Load:
    name: str
    title: str
    chunks: int  # content chunks per stream
    interval_ms: int  # between content chunks
    first_ms: int  # before the first content chunk
    upstream: str = "openai"  # the mock's wire format: openai | anthropic | gemini
    concurrency: int = 0  # closed loop: workers
    streams: int = 0  # ramp: streams, one connection each
    ramp_s: float = 0.0
    quick: bool = True
    per_request: bool = False  # its figure is CPU per request: a stream of one content chunk is mostly that

    @property
    def segment(self) -> str:
        """The mock's path segment that sets this load's stream: bench/fake_upstream.py."""
        return f"c{self.chunks}-i{self.interval_ms}-f{self.first_ms}"

    @property
    def idle(self) -> bool:
        return self.streams > 0

    @property
    def model(self) -> str:
        return {"anthropic": ANTHROPIC_MODEL, "gemini": GEMINI_MODEL}.get(self.upstream, OPENAI_MODEL)


LOADS = {load.name: load for load in (
    Load("openai", "128 streams x 50 chunks, no delay", 50, 0, 0, concurrency=128),
    Load("paced", "100 streams x 20 chunks 20 ms apart", 20, 20, 20, concurrency=100),
    Load("requests", "per request: 64 streams x 1 chunk, no delay", 1, 0, 0, concurrency=64, per_request=True),
    Load("alone", "1 stream at a time x 2 chunks 20 ms apart: the path, with no other load", 2, 20, 20,
         concurrency=1),
    Load("anthropic", "Anthropic upstream translated, 128 streams x 50 chunks", 50, 0, 0, "anthropic",
         concurrency=128),
    Load("gemini", "Gemini upstream translated, 128 streams x 50 chunks", 50, 0, 0, "gemini", concurrency=128),
    Load("storm", "5,000 idle streams ramped in 5 s", 10, 1000, 0, streams=5000, ramp_s=5.0, quick=False),
    Load("idle", "10,000 concurrent idle streams, ramped in 10 s", 10, 2000, 0, streams=10000, ramp_s=10.0,
         quick=False),
)}
# Warms the idle loads' targets up: short fast streams (an idle load's own streams last seconds).
WARM = Load("warm", "warm-up", 5, 0, 0, concurrency=100)


def openai_body(model: str) -> bytes:
    return orjson.dumps({"model": model, "stream": True, "stream_options": {"include_usage": True},
                         "max_tokens": 1024, "messages": PROMPT})


def anthropic_body() -> bytes:
    return orjson.dumps({"model": ANTHROPIC_MODEL, "stream": True, "max_tokens": 1024, "messages": PROMPT})


def gemini_body() -> bytes:
    return orjson.dumps({"contents": [{"role": "user", "parts": [{"text": PROMPT[0]["content"]}]}],
                         "generationConfig": {"maxOutputTokens": 1024}})


def direct_target(load: Load, mock_port: int) -> Target:
    """The mock asked in the load's own wire format."""
    base = f"/bench/{load.segment}"
    if load.upstream == "anthropic":
        return Target(mock_port, f"{base}/v1/messages", anthropic_body(), (("x-api-key", "bench-key"),),
                      wire="anthropic")
    if load.upstream == "gemini":
        return Target(mock_port, f"{base}/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse",
                      gemini_body(), (("x-goog-api-key", "bench-key"),), wire="gemini")
    return Target(mock_port, f"{base}/v1/chat/completions", openai_body(OPENAI_MODEL))


# ---------------------------------------------------------------- the targets


@dataclass
class Peer:
    """One thing measured: the mock alone, the gateway, or a peer, and how a load's request reaches it."""
    name: str
    label: str
    version: str = ""
    port: int = 0
    child: Child | None = None
    missing: str = ""  # why it is not measured at all
    # RSS after its first warm-up: the base of memory per stream, since memory an earlier load grew into
    # stays reserved (it would hide the next load's streams from an RSS-before-the-load base)
    baseline_rss_kib: int = 0

    def target(self, load: Load, mock_port: int) -> Target:
        if self.name == "direct":
            return direct_target(load, mock_port)
        if self.name == "aiohttp":  # the mock's own request, through the pass-through
            return direct_target(load, self.port)
        if self.name in ("gateway", "base"):  # base: this gateway at another commit
            return Target(self.port, "/v1/chat/completions", openai_body(f"{load.name}/{load.model}"))
        if self.name == "litellm":
            return Target(self.port, "/v1/chat/completions", openai_body(load.name),
                          (("Authorization", f"Bearer {LITELLM_MASTER_KEY}"),))
        # Portkey appends its own path to the custom host: /chat/completions (OpenAI), /messages
        # (Anthropic), /v1beta/models/<model>:streamGenerateContent (Google)
        base = f"http://127.0.0.1:{mock_port}/bench/{load.segment}"
        provider, host = {"anthropic": ("anthropic", f"{base}/v1"), "gemini": ("google", base)}.get(
            load.upstream, ("openai", f"{base}/v1"))
        headers = (("x-portkey-provider", provider), ("x-portkey-custom-host", host),
                   ("Authorization", "Bearer bench-key"))
        wire = "openai-no-done" if load.upstream == "gemini" else "openai"  # it adds no [DONE] to Google's stream
        return Target(self.port, "/v1/chat/completions", openai_body(load.model), headers, wire)


def gateway_config(mock_port: int, port: int, loads: list[Load]) -> str:
    providers = []
    for load in loads:
        base = f"http://127.0.0.1:{mock_port}/bench/{load.segment}"
        if load.upstream == "openai":
            providers.append(f"  - {{name: {load.name}, kind: openai, base_url: '{base}/v1', stream_options: true}}")
        else:  # anthropic.py and gemini.py add their own paths (/v1/messages, /v1beta/models/...)
            providers.append(f"  - {{name: {load.name}, kind: {load.upstream}, base_url: '{base}', "
                             "api_key: bench-key}")
    return ("server: {host: 127.0.0.1, port: %d, shutdown_grace: 1}\nproviders:\n%s\nmiddlewares: [normalize]\n"
            % (port, "\n".join(providers)))


def litellm_config(mock_port: int, loads: list[Load]) -> str:
    models = []
    for load in loads:
        base = f"http://127.0.0.1:{mock_port}/bench/{load.segment}"
        if load.upstream == "anthropic":
            params = {"model": f"anthropic/{ANTHROPIC_MODEL}", "api_base": f"{base}/v1/messages"}
        elif load.upstream == "gemini":  # LiteLLM builds {api_base}/models/{model}:streamGenerateContent?alt=sse
            params = {"model": f"gemini/{GEMINI_MODEL}", "api_base": f"{base}/v1beta"}
        else:
            params = {"model": f"openai/{OPENAI_MODEL}", "api_base": f"{base}/v1"}
        models.append({"model_name": load.name, "litellm_params": {**params, "api_key": "bench-key"}})
    # JSON is YAML: no YAML writer needed
    return json.dumps({"model_list": models, "litellm_settings": {"drop_params": True, "telemetry": False},
                       "general_settings": {"master_key": LITELLM_MASTER_KEY}})


def litellm_version(peers_dir: Path) -> str:
    found = glob.glob(str(peers_dir / "litellm" / "lib" / "python*" / "site-packages" / "litellm-*.dist-info"))
    return Path(found[0]).name.removeprefix("litellm-").removesuffix(".dist-info") if found else ""


def portkey_version(peers_dir: Path) -> str:
    package = peers_dir / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    try:
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return ""
