"""Moderation of a request before the upstream is called: every text of it a provider will read, checked
by the configured rules and the moderation service; a match or a flagged verdict is a 400 `content_filter`."""

from __future__ import annotations

import logging
from typing import Any

from .context import RequestContext
from .errors import GatewayError
from .moderation_config import ModerationConfig
from .moderation_service import is_flagged

log = logging.getLogger("gateway")

CONTENT_FILTERED = "content_filter"  # the error code, and the finish reason of a blocked answer


def content_filtered() -> GatewayError:
    return GatewayError(400, "the request was refused by the gateway's content moderation", code=CONTENT_FILTERED)



def request_texts(ctx: RequestContext) -> list[str]:
    """Every text of the request that a provider will read: each message's content (strings, and text or
    refusal parts), the reasoning and tool calls (name and arguments) of assistant turns sent back, tool
    results, and the tools' own names, descriptions and schemas; or the prompt on /completions."""
    body = ctx.body
    if ctx.endpoint != "chat":
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        return [p for p in prompts if isinstance(p, str) and p]
    texts: list[str] = []
    for message in body.get("messages") or ():
        _message_texts(message, texts)
    tools = body.get("tools")
    if tools:
        _strings(tools, texts)
    return texts


def _message_texts(message: dict[str, Any], texts: list[str]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text") if part.get("type") != "refusal" else part.get("refusal")
                if isinstance(text, str):
                    texts.append(text)
    for field in ("refusal", "reasoning_content", "name"):
        if isinstance(message.get(field), str):
            texts.append(message[field])
    calls = message.get("tool_calls")
    functions = [call.get("function") for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    functions.append(message.get("function_call"))  # the legacy single call
    for function in functions:
        if isinstance(function, dict):
            texts.extend(function[k] for k in ("name", "arguments") if isinstance(function.get(k), str))


def _strings(value: object, texts: list[str]) -> None:
    """Every string in a JSON value, keys included (a schema's property names reach the model too);
    iterative, so that depth costs no recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            texts.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


async def check_request(ctx: RequestContext, settings: ModerationConfig) -> None:
    texts = request_texts(ctx)
    if settings.rules:
        for text in texts:
            rule = settings.rules.first_match(text)
            if rule is not None:
                log.info("request %s refused: its messages match moderation rule %d", ctx.request_id, rule.index)
                raise content_filtered()
    if settings.service is not None and texts and ctx.session is not None:
        if await is_flagged(ctx.session, settings.service, "\n\n".join(texts), ctx.request_id):
            log.info("request %s refused by the moderation service", ctx.request_id)
            raise content_filtered()
