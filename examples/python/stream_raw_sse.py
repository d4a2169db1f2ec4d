#!/usr/bin/env python3
"""Streams a chat completion with plain aiohttp, reading the server-sent events by hand: for those who
cannot use an SDK. Network reads end anywhere, in the middle of a line or of a UTF-8 character; the
SSEReader below puts lines and characters back together, skips comments (": keep-alive"), stops at
[DONE] and hands an error event (`data: {"error": {...}}`) on to be reported.

    python stream_raw_sse.py "Tell me a joke"
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import os
import sys
from collections.abc import AsyncIterator

import aiohttp


MAX_LINE_CHARS = 1_000_000  # a line longer than this is not a chat completion stream: stop reading it


class IncompleteStream(Exception):
    """The stream stopped before [DONE]: what arrived is not the whole answer."""


class SSEReader:
    """Turns the bytes of a text/event-stream, in reads of any size, into the `data` of each event.

    Lines end with "\\n" or "\\r\\n" (what OpenAI-compatible servers send); `event:`, `id:` and `retry:`
    fields are read past, since chat completion streams do not use them."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()  # keeps a character cut between two reads
        self._partial: list[str] = []  # the start of a line whose end has not arrived yet
        self._partial_chars = 0
        self._data: list[str] = []  # the data lines of the event being read
        self.comments = 0  # ": keep-alive" and other comments seen

    def feed(self, raw: bytes) -> list[str]:
        text = self._decoder.decode(raw)
        if "\n" not in text:  # no line ended in this read
            self._partial.append(text)
            self._partial_chars += len(text)
            if self._partial_chars > MAX_LINE_CHARS:
                raise IncompleteStream(f"a line longer than {MAX_LINE_CHARS} characters: not an event stream")
            return []
        lines = ("".join(self._partial) + text).split("\n")
        self._partial = [lines.pop()]  # after the last newline: the start of the next line
        self._partial_chars = len(self._partial[0])
        events = []
        for line in lines:
            line = line.removesuffix("\r")
            if not line:  # a blank line ends an event
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
            elif line.startswith(":"):
                self.comments += 1  # proves the connection is alive; nothing to show
            else:
                field, _, value = line.partition(":")
                if field == "data":
                    self._data.append(value.removeprefix(" "))
        return events


async def sse_data(response: aiohttp.ClientResponse, reader: SSEReader | None = None) -> AsyncIterator[str]:
    """The data of each event up to [DONE]. Raises IncompleteStream if the stream ends without [DONE]."""
    reader = reader or SSEReader()
    async for raw in response.content.iter_any():  # whatever has arrived, however it was cut
        for data in reader.feed(raw):
            if data == "[DONE]":
                return
            yield data
    raise IncompleteStream("the stream ended without [DONE]: the connection was cut")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="Hello!", help="what to ask (default: %(default)s)")
    parser.add_argument("--base-url", default=os.environ.get("GATEWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
                        help="the gateway's API root (default: $GATEWAY_BASE_URL or %(default)s)")
    parser.add_argument("--model", default="demo/echo", help="provider/model or a route name (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                        help="a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)")
    return parser.parse_args()


def request_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


async def error_of(response: aiohttp.ClientResponse) -> str:
    """The message of an OpenAI-style error body, or the start of whatever the body is."""
    body = await response.text(errors="replace")
    try:
        return json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return body[:300]


async def stream_chat(args: argparse.Namespace) -> int:
    body = {"model": args.model, "messages": [{"role": "user", "content": args.prompt}], "stream": True,
            "stream_options": {"include_usage": True}}
    # No total timeout: an answer may stream for minutes. sock_read is a guard against a dead connection,
    # well above the gateway's keep-alive interval (15 s); watchdog.py shows a finer policy.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = args.base_url.rstrip("/") + "/chat/completions"
        async with session.post(url, json=body, headers=request_headers(args.api_key)) as response:
            if response.status != 200:  # refused before the stream began: the status says why
                print(f"error: HTTP {response.status}: {await error_of(response)}", file=sys.stderr)
                return 1
            finish_reason, usage, skipped = None, None, 0
            try:
                async for data in sse_data(response):
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        chunk = None
                    if not isinstance(chunk, dict):
                        skipped += 1  # not a chunk: skip it rather than lose the whole answer
                        continue
                    if "error" in chunk:  # the stream failed after it began
                        error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                        print(f"\nerror: {error.get('message')} ({error.get('code')})", file=sys.stderr)
                        return 1
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        print((choice.get("delta") or {}).get("content") or "", end="", flush=True)
                        finish_reason = choice.get("finish_reason") or finish_reason
            except (IncompleteStream, aiohttp.ClientError, TimeoutError) as error:
                why = str(error) or type(error).__name__
                print(f"\nerror: the stream was cut, the answer is incomplete: {why}", file=sys.stderr)
                return 1
    print()
    if skipped:
        print(f"skipped {skipped} event(s) that were not chunks", file=sys.stderr)
    print(f"finish reason: {finish_reason}")
    if usage:
        print(f"usage: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion "
              f"= {usage['total_tokens']} tokens")
    return 0 if finish_reason else 1  # no finish reason: the answer was cut short


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(stream_chat(args))
    except (aiohttp.ClientConnectionError, TimeoutError) as error:
        print(f"error: cannot reach the gateway at {args.base_url}: {str(error) or type(error).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
