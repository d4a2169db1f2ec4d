#!/usr/bin/env python3
"""A client-side watchdog for a stream that never ends, with plain aiohttp (the SSE reader of
stream_raw_sse.py, next to this file).

While a provider is slow the gateway sends ": keep-alive" comments (every 15 s of silence by default,
`server.sse_keepalive`). The policy here:
- keep-alive comments prove the connection is alive, but they are not progress: only an event (a chunk of
  the answer) resets the idle timer. A stream that sends nothing but keep-alives for --idle-timeout
  seconds is given up, and what arrived so far is shown marked INCOMPLETE.
- no byte at all, not even a keep-alive, for --silence-timeout seconds means the connection itself is dead
  (keep-alives would have come): that is detected sooner than a stuck answer.
Set --idle-timeout above the longest time your model thinks before its first token.

    python watchdog.py --idle-timeout 60 "Think hard, then answer"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import aiohttp

from stream_raw_sse import IncompleteStream, SSEReader, error_of, request_headers


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="Hello!", help="what to ask (default: %(default)s)")
    parser.add_argument("--base-url", default=os.environ.get("GATEWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
                        help="the gateway's API root (default: $GATEWAY_BASE_URL or %(default)s)")
    parser.add_argument("--model", default="demo/echo", help="provider/model or a route name (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                        help="a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)")
    parser.add_argument("--idle-timeout", type=float, default=120,
                        help="seconds without an event, keep-alives or not, before giving up (default: %(default)s)")
    parser.add_argument("--silence-timeout", type=float, default=45,
                        help="seconds without any byte (3 keep-alive intervals) before calling the connection "
                             "dead (default: %(default)s)")
    return parser.parse_args()


async def watched_events(response: aiohttp.ClientResponse, reader: SSEReader, idle_timeout: float,
                         silence_timeout: float) -> AsyncIterator[str]:
    """The data of each event up to [DONE]; raises IncompleteStream when the watchdog's limits are passed."""
    loop = asyncio.get_running_loop()
    last_byte = last_event = loop.time()
    comments_before = reader.comments  # keep-alives seen up to the last event
    while True:
        deadline = min(last_event + idle_timeout, last_byte + silence_timeout)
        try:
            async with asyncio.timeout_at(deadline):
                raw = await response.content.readany()
        except TimeoutError:
            if loop.time() >= last_event + idle_timeout:
                keepalives = reader.comments - comments_before
                raise IncompleteStream(f"no progress for {idle_timeout:g} s ({keepalives} keep-alive comment(s) "
                                       "came meanwhile: the gateway is there, the answer is stuck)") from None
            raise IncompleteStream(f"nothing at all for {silence_timeout:g} s, not even a keep-alive: "
                                   "the connection is dead") from None
        if not raw:
            raise IncompleteStream("the stream ended without [DONE]: the connection was cut")
        last_byte = loop.time()
        for data in reader.feed(raw):
            last_event, comments_before = last_byte, reader.comments
            if data == "[DONE]":
                return
            yield data


async def stream_chat(args: argparse.Namespace) -> int:
    body = {"model": args.model, "messages": [{"role": "user", "content": args.prompt}], "stream": True}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)  # reads are timed by the watchdog itself
    reader = SSEReader()
    shown = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = args.base_url.rstrip("/") + "/chat/completions"
        # The watchdog also bounds the wait for the response's headers (the gateway may hold them while
        # the provider is silent, up to its keep-alive interval).
        try:
            async with asyncio.timeout(args.idle_timeout):
                response = await session.post(url, json=body, headers=request_headers(args.api_key))
        except TimeoutError:
            print(f"--- no response within {args.idle_timeout:g} s", file=sys.stderr)
            return 1
        async with response:
            if response.status != 200:
                print(f"error: HTTP {response.status}: {await error_of(response)}", file=sys.stderr)
                return 1
            try:
                async for data in watched_events(response, reader, args.idle_timeout, args.silence_timeout):
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue  # not JSON: skip it, the stream goes on
                    if not isinstance(chunk, dict):
                        continue
                    if "error" in chunk:
                        error = chunk["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise IncompleteStream(f"error event: {message}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        print(text, end="", flush=True)
                        shown += len(text)
            except (IncompleteStream, aiohttp.ClientError) as error:
                print(f"\n--- INCOMPLETE: {error}. Above is what arrived ({shown} characters).")
                return 1
    print(f"\n--- complete ({reader.comments} keep-alive comment(s) on the way)")
    return 0


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(stream_chat(args))
    except aiohttp.ClientConnectionError as error:
        print(f"error: cannot reach the gateway at {args.base_url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
