#!/usr/bin/env python3
"""Streams a chat completion through the gateway with the official `openai` SDK: the text as it arrives,
tool calls put together by their index, and the token usage at the end.

    python stream_openai_sdk.py "Tell me a joke"
    python stream_openai_sdk.py --tools "Weather in Oslo?"
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import openai

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default="Hello!", help="what to ask (default: %(default)s)")
    parser.add_argument("--base-url", default=os.environ.get("GATEWAY_BASE_URL", "http://127.0.0.1:8080/v1"),
                        help="the gateway's API root (default: $GATEWAY_BASE_URL or %(default)s)")
    parser.add_argument("--model", default="demo/echo", help="provider/model or a route name (default: %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("GATEWAY_API_KEY"),
                        help="a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)")
    parser.add_argument("--tools", action="store_true", help="offer a get_weather tool the model may call")
    return parser.parse_args()


def gateway_message(error: openai.APIStatusError) -> str:
    """The gateway's own message (the SDK's `message` prefixes it with "Error code: 404 - ")."""
    body = error.body  # the `error` object of the response's JSON
    return str(body["message"]) if isinstance(body, dict) and body.get("message") else error.message


def main() -> int:
    args = parse_args()
    # The SDK insists on a key; a gateway without client keys ignores it.
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key or "no-key")
    request: dict = {
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},  # the last chunk then carries the token counts
    }
    if args.tools:
        request["tools"] = [WEATHER_TOOL]

    tool_calls: dict[int, dict] = {}  # by index: a call's pieces come in many chunks, only the first has its id
    usage = None
    finish_reason = None
    wrote_text = False
    try:
        with client.chat.completions.create(**request) as stream:
            for chunk in stream:
                if chunk.usage is not None:  # the usage chunk has no choices
                    usage = chunk.usage
                for choice in chunk.choices:
                    delta = choice.delta
                    if delta.content:
                        print(delta.content, end="", flush=True)
                        wrote_text = True
                    for piece in delta.tool_calls or []:
                        call = tool_calls.setdefault(piece.index, {"id": None, "name": None, "arguments": ""})
                        call["id"] = piece.id or call["id"]
                        if piece.function is not None:
                            call["name"] = piece.function.name or call["name"]
                            call["arguments"] += piece.function.arguments or ""
                    finish_reason = choice.finish_reason or finish_reason
    except openai.APIStatusError as error:  # refused before the stream began: 4xx or 5xx with a JSON body
        print(f"error: HTTP {error.status_code}: {gateway_message(error)}", file=sys.stderr)
        return 1
    except openai.APIConnectionError as error:
        print(f"error: cannot reach the gateway at {args.base_url}: {error}", file=sys.stderr)
        return 1
    except openai.APIError as error:  # `data: {"error": ...}` in the middle of the stream
        print(f"\nerror: the stream failed after it began: {error.message}", file=sys.stderr)
        return 1
    if wrote_text:
        print()  # end the answer's line
    for index, call in sorted(tool_calls.items()):
        try:  # the arguments are JSON only once every piece has arrived
            arguments = json.dumps(json.loads(call["arguments"]), ensure_ascii=False)
        except json.JSONDecodeError:
            arguments = f"(not valid JSON) {call['arguments']!r}"
        print(f"tool call {index}: {call['name']}({arguments}) id={call['id']}")
    print(f"finish reason: {finish_reason}")
    if usage is not None:
        print(f"usage: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion "
              f"= {usage.total_tokens} tokens")
    return 0 if finish_reason is not None else 1  # no finish reason: the answer was cut short


if __name__ == "__main__":
    sys.exit(main())
