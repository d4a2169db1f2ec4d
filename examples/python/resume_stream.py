#!/usr/bin/env python3
"""Resumes a stream after its connection dropped, with plain aiohttp. The stream is asked for as
resumable; the gateway numbers its events (`id: <stream id>.<n>`) and keeps reading the provider while
the client is away. To show it, this script drops its own connection after --drop-after pieces of text,
then reads the rest from GET /v2/streams/<id> with the id of the last event it had (Last-Event-ID): the
answer is printed whole, nothing twice, and the provider was asked once.

    python resume_stream.py --drop-after 3 "Tell me a story"

The first response's X-Stream-Id and X-Stream-Token headers are all a client keeps; the token stands in
for the key on the resume URL only (send it as X-Stream-Token, or ?token= where headers cannot be set).
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

RESUME_ATTEMPTS = 5  # tries of GET /v2/streams/<id> while the network is still failing
MAX_LINE_CHARS = 1_000_000


class Dropped(Exception):
    """The connection ended before [DONE]: the rest can be resumed."""


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, str]]:
    """(id, data) of each event up to [DONE] included; comments (keep-alives) skipped. Dropped if the
    connection ends first. Reads end anywhere: lines and UTF-8 characters are put back together."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line_start, event_id, data = "", None, []
    async for raw in response.content.iter_any():
        text = line_start + decoder.decode(raw)
        *lines, line_start = text.split("\n")
        if len(line_start) > MAX_LINE_CHARS:
            raise Dropped("a line too long for an event stream")
        for line in lines:
            line = line.removesuffix("\r")
            if not line:  # a blank line ends an event
                if data:
                    yield event_id, "\n".join(data)
                    if data == ["[DONE]"]:
                        return
                event_id, data = None, []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "id":
                    event_id = value
                elif field == "data":
                    data.append(value)
    raise Dropped("the connection ended before [DONE]")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="Tell me a story", help="what to ask (default: %(default)s)")
    parser.add_argument("--base-url", default=os.environ.get("GATEWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
                        help="the gateway's API root (default: $GATEWAY_BASE_URL or %(default)s)")
    parser.add_argument("--model", default="demo/echo", help="provider/model or a route name (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                        help="a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)")
    parser.add_argument("--drop-after", type=int, default=3, metavar="N",
                        help="drop the connection on purpose after N pieces of text; 0: never (default: %(default)s)")
    return parser.parse_args()


async def error_of(response: aiohttp.ClientResponse) -> str:
    body = await response.text(errors="replace")
    try:
        error = json.loads(body)["error"]
        return f"{error['message']} ({error.get('code')})"
    except (ValueError, KeyError, TypeError):
        return body[:300]


class Answer:
    """What has been shown: the last event id, the finish reason, and the pieces of text."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.finish_reason: str | None = None
        self.pieces = 0

    async def read(self, response: aiohttp.ClientResponse, drop_after: int = 0) -> bool:
        """Prints the text of each event; True once [DONE] came. Returns False when it drops on purpose."""
        async for event_id, data in events(response):
            self.last_id = event_id or self.last_id
            if data == "[DONE]":
                return True
            chunk = json.loads(data)
            if "error" in chunk:  # the stream failed after it began: resuming replays the same error
                raise RuntimeError(f"{chunk['error'].get('message')} ({chunk['error'].get('code')})")
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text:
                    print(text, end="", flush=True)
                    self.pieces += 1
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
            if drop_after and self.pieces >= drop_after:
                return False
        return True


async def run(args: argparse.Namespace) -> int:
    root = args.base_url.rstrip("/").removesuffix("/v1").removesuffix("/v2")
    headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {args.api_key}"} if args.api_key else {})}
    body = {"model": args.model, "messages": [{"role": "user", "content": args.prompt}], "stream": True,
            "stream_options": {"resumable": True}}
    answer = Answer()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)  # above the 15 s keep-alive
    async with aiohttp.ClientSession(timeout=timeout) as session:
        response = await session.post(f"{root}/v1/chat/completions", json=body, headers=headers)
        if response.status != 200:
            print(f"error: HTTP {response.status}: {await error_of(response)}", file=sys.stderr)
            return 1
        if "X-Stream-Id" not in response.headers:
            print("error: this gateway does not resume streams (no X-Stream-Id)", file=sys.stderr)
            return 1
        stream_id, token = response.headers["X-Stream-Id"], response.headers["X-Stream-Token"]
        try:
            done = await answer.read(response, args.drop_after)
        except Dropped:
            done = False
        finally:
            response.close()  # on purpose after --drop-after pieces: the connection is gone mid-stream
        attempt = 0
        while not done:
            attempt += 1
            print(f"\n--- connection dropped after event {answer.last_id}; resuming", file=sys.stderr)
            resume_headers = {**headers, "X-Stream-Token": token}
            if answer.last_id:
                resume_headers["Last-Event-ID"] = answer.last_id
            try:
                async with session.get(f"{root}/v2/streams/{stream_id}", headers=resume_headers) as resumed:
                    if resumed.status == 204:  # nothing after our last event: we had it all
                        break
                    if resumed.status != 200:  # 410: gone (grace over, or too big to keep); 404: unknown
                        print(f"error: cannot resume: HTTP {resumed.status}: {await error_of(resumed)}",
                              file=sys.stderr)
                        return 1
                    done = await answer.read(resumed)
            except (Dropped, aiohttp.ClientError) as error:
                if attempt >= RESUME_ATTEMPTS:
                    print(f"error: gave up resuming: {error}", file=sys.stderr)
                    return 1
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
    print(f"\n--- complete (finish reason: {answer.finish_reason}; resumed {attempt} time(s))")
    return 0 if answer.finish_reason else 1


def main() -> int:
    args = parse_args()
    try:
        return asyncio.run(run(args))
    except RuntimeError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    except (aiohttp.ClientConnectionError, TimeoutError) as error:
        print(f"error: cannot reach the gateway at {args.base_url}: {str(error) or type(error).__name__}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
