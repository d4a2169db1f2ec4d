"""A fast fake upstream for the benchmarks: OpenAI's, Anthropic's and Gemini's streaming endpoints.

Each answer to /v1/chat/completions is what api.openai.com sends for a streamed chat completion, byte
for byte in shape: a role chunk, `--chunks-per-stream` content chunks, a finish chunk with
finish_reason "stop", a `choices: []` usage chunk when the request set stream_options.include_usage,
then `data: [DONE]`. /v1/messages answers as api.anthropic.com streams a Message: message_start,
content_block_start, ping, one text_delta per content chunk, content_block_stop, message_delta
(end_turn), message_stop, with `event:` lines and the padded JSON Anthropic sends.
/v1beta/models/{model}:streamGenerateContent answers as Gemini's `alt=sse` stream: one
GenerateContentResponse per content chunk, framed `data: <json>\r\n\r\n`, in Google's compact JSON with
a space after each colon, cumulative usageMetadata on every event, finishReason STOP on the last; no
[DONE]: the chunked body simply ends. (Without `alt=sse` Google streams a JSON array instead; that form
is not modelled: every request gets the SSE form.) One SSE event per write, as a real provider flushes
each token.

The same endpoints under `/bench/c<chunks>-i<interval ms>-f<first ms>/` take their settings from the
path instead of the command line (`f`: the wait before the first content chunk), so that one process
serves every load of bench/compare.py, each through its own base URL:
`/bench/c50-i20-f20/v1/chat/completions`, `/bench/c10-i1000-f0/v1/messages`,
`/bench/c50-i0-f0/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.

Run alone: python bench/fake_upstream.py --port 9000 [--chunks-per-stream 200] [--chunk-interval 0.02]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
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
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
GEMINI_MODEL = "gemini-2.5-flash"
PROMPT_TOKENS = 25
BENCH_LOAD = re.compile(r"c(\d{1,6})-i(\d{1,6})-f(\d{1,6})")


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


class AnthropicStream:
    """The events of one streamed Message, framed as api.anthropic.com frames them (padding included)."""

    def __init__(self) -> None:
        self.message_id = f"msg_01{uuid.uuid4().hex[:22]}"

    @staticmethod
    def _event(name: str, payload: dict, padding: int = 0) -> bytes:
        data = orjson.dumps({"type": name, **payload})
        if padding:  # Anthropic pads some payloads with spaces before the closing brace
            data = data[:-1] + b" " * padding + b"}"
        return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"

    def opening(self) -> list[bytes]:
        usage = {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "output_tokens": 1, "service_tier": "standard"}
        return [self._event("message_start", {"message": {
                    "model": ANTHROPIC_MODEL, "id": self.message_id, "type": "message", "role": "assistant",
                    "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}, 1),
                self._event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}, 15),
                b'event: ping\ndata: {"type": "ping"}\n\n']

    def content(self, i: int) -> bytes:
        return self._event("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                           "text": TOKENS[i % len(TOKENS)]}}, 15)

    def ending(self, completion_tokens: int) -> list[bytes]:
        return [self._event("content_block_stop", {"index": 0}, 4),
                self._event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                              "usage": {"output_tokens": completion_tokens}}),
                self._event("message_stop", {}, 3)]


class GeminiStream:
    """The events of one `:streamGenerateContent?alt=sse` answer, as generativelanguage.googleapis.com
    frames them: the bytes are prebuilt once, and each event only escapes its token and formats its counts."""

    TEMPLATE = (b'data: {"candidates": [{"content": {"parts": [{"text": %s}],"role": "model"}%s,"index": 0}],'
                b'"usageMetadata": {"promptTokenCount": %d,"candidatesTokenCount": %d,"totalTokenCount": %d,'
                b'"promptTokensDetails": [{"modality": "TEXT","tokenCount": %d}]},'
                b'"modelVersion": "%s","responseId": "%s"}\r\n\r\n')
    FINISH = b',"finishReason": "STOP"'

    def __init__(self, count: int) -> None:
        self.last = count - 1  # the last content chunk carries the finish reason, as Gemini sends it
        self.model = GEMINI_MODEL.encode()
        self.response_id = secrets.token_urlsafe(18)[:23].encode()  # 23 characters, as Google's ids

    def content(self, i: int) -> bytes:
        return self.TEMPLATE % (orjson.dumps(TOKENS[i % len(TOKENS)]), self.FINISH if i == self.last else b"",
                                PROMPT_TOKENS, i + 1, PROMPT_TOKENS + i + 1, PROMPT_TOKENS, self.model,
                                self.response_id)


def load_settings(request: web.Request) -> tuple[int, float, float]:
    """(content chunks, seconds between them, seconds before the first) for this request."""
    load = request.match_info.get("load")
    if load is None:
        settings = request.app[SETTINGS]
        return settings["chunks_per_stream"], settings["chunk_interval"], settings["chunk_interval"]
    match = BENCH_LOAD.fullmatch(load)
    if match is None:
        raise web.HTTPNotFound(text="the load segment reads c<chunks>-i<interval ms>-f<first ms>")
    chunks, interval_ms, first_ms = map(int, match.groups())
    return chunks, interval_ms / 1e3, first_ms / 1e3


async def _stream(request: web.Request, settings: tuple[int, float, float], opening: list[bytes], content,
                  ending) -> web.StreamResponse:
    count, interval, first = settings
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    try:
        for event in opening:
            await response.write(event)
        for i in range(count):
            wait = first if i == 0 else interval
            if wait:
                await asyncio.sleep(wait)
            await response.write(content(i))
        for event in ending(count):
            await response.write(event)
        await response.write_eof()
    except ConnectionResetError:  # the client (the gateway) went away: nothing left to do
        pass
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    stream = OpenAIStream(include_usage(orjson.loads(await request.read())))
    return await _stream(request, load_settings(request), [stream.role()], stream.content, stream.ending)


async def messages(request: web.Request) -> web.StreamResponse:
    await request.read()
    stream = AnthropicStream()
    return await _stream(request, load_settings(request), stream.opening(), stream.content, stream.ending)


async def stream_generate_content(request: web.Request) -> web.StreamResponse:
    await request.read()
    settings = load_settings(request)
    stream = GeminiStream(settings[0])
    return await _stream(request, settings, [], stream.content, lambda count: [])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks-per-stream", type=int, default=200, help="content chunks per answer")
    parser.add_argument("--chunk-interval", type=float, default=0.0, help="seconds between content chunks")
    parser.add_argument("--backlog", type=int, default=128, help="the listening socket's accept queue")
    args = parser.parse_args()
    app = web.Application()
    app[SETTINGS] = {"chunks_per_stream": args.chunks_per_stream, "chunk_interval": args.chunk_interval}
    for prefix in ("", "/bench/{load}"):
        app.router.add_post(f"{prefix}/v1/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/v1/messages", messages)
        app.router.add_post(prefix + "/v1beta/models/{model}:streamGenerateContent", stream_generate_content)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, shutdown_timeout=1,
                backlog=args.backlog)


if __name__ == "__main__":
    main()
