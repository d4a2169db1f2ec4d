"""A fast fake OpenAI upstream for the stream benchmark: `POST /v1/chat/completions` always streams.

Each answer is what api.openai.com sends for a streamed chat completion, byte for byte in shape:
a role chunk, `--chunks-per-stream` content chunks, a finish chunk with finish_reason "stop", a
`choices: []` usage chunk when the request set stream_options.include_usage, then `data: [DONE]`.
One SSE event per write, as a real provider flushes each token.

Run alone: python bench/fake_upstream.py --port 9000 [--chunks-per-stream 200] [--chunk-interval 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson
from aiohttp import web

MODEL = "gpt-4o-mini-2024-07-18"
FINGERPRINT = "fp_d02d531b47"
# Typical BPE pieces, with a non-ASCII one and a newline so that JSON escaping is exercised too.
TOKENS = (" The", " gateway", " streams", " each", " token", " as", " it", " arrives", ",", " and",
          " the", " client", " sees", " it", " at", " once", ".", "\n\n", "Caf\u00e9", " ok")
SETTINGS = web.AppKey("settings", dict)
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"


def _event(chunk: dict) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class OpenAIStream:
    """The events of one streamed chat completion, framed as api.openai.com frames them."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.envelope = {"id": f"chatcmpl-{uuid.uuid4().hex[:29]}", "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": MODEL, "service_tier": "default",
                         "system_fingerprint": FINGERPRINT}
        # OpenAI adds "usage": null to every chunk once usage is asked for
        self._usage_field = {"usage": None} if include_usage else {}

    def chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return _event({**self.envelope, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                     "finish_reason": finish_reason}], **self._usage_field})

    def role(self) -> bytes:
        return self.chunk({"role": "assistant", "content": "", "refusal": None})

    def content(self, i: int) -> bytes:
        return self.chunk({"content": TOKENS[i % len(TOKENS)]})

    def finish(self) -> bytes:
        return self.chunk({}, "stop")

    def usage(self, completion_tokens: int, prompt_tokens: int = 25) -> bytes:
        return _event({**self.envelope, "choices": [], "usage": {
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}})

    def ending(self, completion_tokens: int) -> list[bytes]:
        """The finish chunk, the usage chunk when it was asked for, and [DONE]."""
        usage = [self.usage(completion_tokens)] if self.include_usage else []
        return [self.finish(), *usage, DONE]


def include_usage(body: dict) -> bool:
    return bool((body.get("stream_options") or {}).get("include_usage"))


async def chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    stream = OpenAIStream(include_usage(orjson.loads(await request.read())))
    count, interval = settings["chunks_per_stream"], settings["chunk_interval"]
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    try:
        await response.write(stream.role())
        for i in range(count):
            if interval:
                await asyncio.sleep(interval)
            await response.write(stream.content(i))
        for event in stream.ending(count):
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:  # the client (the gateway) went away: nothing left to do
        pass
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks-per-stream", type=int, default=200, help="content chunks per answer")
    parser.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between content chunks")
    args = parser.parse_args()
    app = web.Application()
    app[SETTINGS] = {"chunks_per_stream": args.chunks_per_stream, "chunk_interval": args.chunk_interval}
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
