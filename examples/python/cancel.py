#!/usr/bin/env python3
"""Stops an answer early with the `openai` SDK. Closing the stream closes its connection; the gateway
sees the client leave and closes its own request to the provider, so generation (and billing) stops
there too. The gateway logs the request with `outcome=client_disconnected`:

    INFO gateway.access: request id=<own id> request_id=<id> chat key=- provider=demo model=echo stream=True tries=1
    outcome=client_disconnected ...

    python cancel.py --after 5 "Tell me a long story"
"""

from __future__ import annotations

import argparse
import os
import sys

import openai


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="Tell me a long story", help="what to ask (default: %(default)s)")
    parser.add_argument("--base-url", default=os.environ.get("GATEWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
                        help="the gateway's API root (default: $GATEWAY_BASE_URL or %(default)s)")
    parser.add_argument("--model", default="demo/echo", help="provider/model or a route name (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                        help="a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)")
    parser.add_argument("--after", type=int, default=5, metavar="N",
                        help="stop after N pieces of text (default: %(default)s)")
    return parser.parse_args()


def gateway_message(error: openai.APIStatusError) -> str:
    """The gateway's own message (the SDK's `message` prefixes it with "Error code: 404 - ")."""
    body = error.body  # the `error` object of the response's JSON
    return str(body["message"]) if isinstance(body, dict) and body.get("message") else error.message


def main() -> int:
    args = parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key or "no-key")
    try:
        stream = client.chat.completions.create(model=args.model, stream=True,
                                                messages=[{"role": "user", "content": args.prompt}])
    except openai.APIStatusError as error:  # refused before the stream began
        print(f"error: HTTP {error.status_code}: {gateway_message(error)}", file=sys.stderr)
        return 1
    except openai.APIConnectionError as error:
        print(f"error: cannot reach the gateway at {args.base_url}: {error}", file=sys.stderr)
        return 1
    request_id = stream.response.headers.get("x-request-id", "?")  # the id in the gateway's log line
    pieces = 0
    try:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    print(choice.delta.content, end="", flush=True)
                    pieces += 1
                if choice.finish_reason:
                    print(f"\nthe answer ended ({choice.finish_reason}) before {args.after} pieces: nothing to stop")
                    return 0
            if pieces >= args.after:
                break
    except openai.APIError as error:
        print(f"\nerror: {error.message}", file=sys.stderr)
        return 1
    finally:
        # Closes the connection (an unread answer cannot be left on a pooled one); a Stop button does this.
        stream.close()
    print(f"\n--- stopped after {pieces} pieces; the gateway logs: request_id={request_id} ... outcome=client_disconnected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
