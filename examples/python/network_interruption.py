#!/usr/bin/env python3
"""What to do when the network fails under a stream, with the `openai` SDK.

- Failed before any of the answer arrived (connection refused or reset, a 429 or 5xx from the gateway,
  an error event before the first piece of text): nothing was shown, so the request is sent again, after
  a backoff that doubles each time, with jitter, and at least what a Retry-After header asks.
- Cut after the answer began: the text so far stays on screen, marked INCOMPLETE, and the script exits 1.
  It is not retried behind the user's back (a new request starts a different answer), and it is never
  presented as complete: only a finish reason says that an answer is whole.

    python network_interruption.py "Tell me a story"
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import openai

try:  # newer openai SDKs speak HTTP with httpx2, older ones with httpx
    from httpx2 import TransportError
except ImportError:
    from httpx import TransportError

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}  # others (400, 401, 404...) will not pass by waiting
MAX_DELAY = 30.0  # seconds: the longest wait between two attempts


class NoFinishReason(Exception):
    """The stream ended without saying the answer was finished."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="Hello!", help="what to ask (default: %(default)s)")
    parser.add_argument("--base-url", default=os.environ.get("GATEWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
                        help="the gateway's API root (default: $GATEWAY_BASE_URL or %(default)s)")
    parser.add_argument("--model", default="demo/echo", help="provider/model or a route name (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                        help="a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)")
    parser.add_argument("--retries", type=int, default=3, help="retries before the first chunk (default: %(default)s)")
    parser.add_argument("--backoff", type=float, default=0.5,
                        help="seconds before the first retry, doubled for each next one (default: %(default)s)")
    return parser.parse_args()


def stream_answer(client: openai.OpenAI, model: str, prompt: str, shown: list[str]) -> str:
    """Streams the answer to stdout, appending each piece shown to `shown`; returns the finish reason."""
    finish_reason = None
    with client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                        stream=True) as stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    print(choice.delta.content, end="", flush=True)
                    shown.append(choice.delta.content)
                finish_reason = choice.finish_reason or finish_reason
    if finish_reason is None:  # ended quietly, without [DONE] or a finish reason: not a whole answer
        raise NoFinishReason("the stream ended without a finish reason")
    return finish_reason


def gateway_message(error: openai.APIStatusError) -> str:
    """The gateway's own message (the SDK's `message` prefixes it with "Error code: 404 - ")."""
    body = error.body  # the `error` object of the response's JSON
    return str(body["message"]) if isinstance(body, dict) and body.get("message") else error.message


def describe(error: Exception) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {gateway_message(error)}"
    if isinstance(error, openai.APIConnectionError):
        return f"no connection: {error.__cause__ or error}"
    if isinstance(error, openai.APIError):
        return f"error event: {error.message} ({error.code})"
    if isinstance(error, TransportError):
        return f"connection cut: {error or type(error).__name__}"
    return str(error)


def retry_delay(error: Exception, attempt: int, backoff: float) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when retrying would not help."""
    retry_after = None
    if isinstance(error, openai.APIStatusError):
        if error.status_code not in RETRYABLE_STATUS:
            return None
        retry_after = error.response.headers.get("retry-after")
    elif isinstance(error, openai.APIError) and not isinstance(error, openai.APIConnectionError):
        if error.type == "invalid_request_error":  # an error event about the request itself
            return None
    delay = backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)  # jitter: clients do not all come back at once
    if retry_after and retry_after.isdigit():
        delay = max(delay, float(retry_after))
    return min(delay, MAX_DELAY)


def main() -> int:
    args = parse_args()
    # max_retries=0: the SDK would retry failed requests itself; here the policy is spelled out instead.
    # The read timeout is a guard against a dead connection, above the gateway's 15 s keep-alive interval.
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key or "no-key", max_retries=0,
                           timeout=openai.Timeout(60, connect=10))
    attempt = 0
    while True:
        attempt += 1
        shown: list[str] = []
        try:
            finish_reason = stream_answer(client, args.model, args.prompt, shown)
        except (openai.APIError, TransportError, NoFinishReason) as error:
            if shown:
                print(f"\n--- INCOMPLETE: {describe(error)}. Above is what arrived ({len(''.join(shown))} "
                      "characters): it is not the whole answer.")
                return 1
            delay = retry_delay(error, attempt, args.backoff)
            if delay is None or attempt > args.retries:
                print(f"error: {describe(error)} (attempt {attempt}, giving up)", file=sys.stderr)
                return 1
            print(f"attempt {attempt} failed before the first chunk: {describe(error)}; "
                  f"retrying in {delay:.2f} s", file=sys.stderr)
            time.sleep(delay)
            continue
        print(f"\n--- complete (finish reason: {finish_reason})")
        return 0


if __name__ == "__main__":
    sys.exit(main())
