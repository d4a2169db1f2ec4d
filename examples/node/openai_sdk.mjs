#!/usr/bin/env node
// Streams a chat completion through the gateway with the official `openai` package.
import OpenAI from "openai";
import { COMMON_USAGE, parseCommandLine } from "./cli.mjs";

const USAGE = `usage: node openai_sdk.mjs [options] [prompt]

Streams an answer with the openai package: the text as it arrives, tool calls put together by
their index, and the token usage at the end.

${COMMON_USAGE}
  --tools          offer a get_weather tool the model may call`;

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

const { options, prompt } = parseCommandLine(USAGE, { tools: { type: "boolean", default: false } });
// The package insists on a key; a gateway without client keys ignores it.
const client = new OpenAI({ baseURL: options["base-url"], apiKey: options["api-key"] ?? "no-key" });

/** What went wrong under the wrappers: fetch's "fetch failed" has the socket's error as its cause. */
function rootCause(error) {
  while (error.cause instanceof Error) error = error.cause;
  return error.code ? `${error.code} ${error.message}` : error.message;
}

async function main() {
  const toolCalls = new Map(); // by index: a call's pieces come in many chunks, only the first has its id
  let usage = null;
  let finishReason = null;
  let wroteText = false;
  try {
    const stream = await client.chat.completions.create({
      model: options.model,
      messages: [{ role: "user", content: prompt }],
      stream: true,
      stream_options: { include_usage: true }, // the last chunk then carries the token counts
      ...(options.tools ? { tools: [WEATHER_TOOL] } : {}),
    });
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage; // the usage chunk has no choices
      for (const choice of chunk.choices) {
        const delta = choice.delta ?? {};
        if (delta.content) {
          process.stdout.write(delta.content);
          wroteText = true;
        }
        for (const piece of delta.tool_calls ?? []) {
          if (!toolCalls.has(piece.index)) toolCalls.set(piece.index, { id: null, name: null, arguments: "" });
          const call = toolCalls.get(piece.index);
          call.id = piece.id ?? call.id;
          call.name = piece.function?.name ?? call.name;
          call.arguments += piece.function?.arguments ?? "";
        }
        finishReason = choice.finish_reason ?? finishReason;
      }
    }
  } catch (error) {
    if (error instanceof OpenAI.APIConnectionError) {
      console.error(`error: cannot reach the gateway at ${options["base-url"]}: ${rootCause(error)}`);
    } else if (error instanceof OpenAI.APIError && error.status) { // refused before the stream began
      console.error(`error: HTTP ${error.status}: ${error.error?.message ?? error.message}`);
    } else if (error instanceof OpenAI.APIError) { // `data: {"error": ...}` in the middle of the stream
      console.error(`\nerror: the stream failed after it began: ${error.error?.message ?? error.message}`);
    } else {
      console.error(`\nerror: the stream was cut: ${error.message}`);
    }
    return 1;
  }
  if (wroteText) process.stdout.write("\n");

  for (const [index, call] of [...toolCalls].sort(([a], [b]) => a - b)) {
    let args;
    try { // the arguments are JSON only once every piece has arrived
      args = JSON.stringify(JSON.parse(call.arguments));
    } catch {
      args = `(not valid JSON) ${JSON.stringify(call.arguments)}`;
    }
    console.log(`tool call ${index}: ${call.name}(${args}) id=${call.id}`);
  }
  console.log(`finish reason: ${finishReason}`);
  if (usage) {
    const { prompt_tokens, completion_tokens, total_tokens } = usage;
    console.log(`usage: ${prompt_tokens} prompt + ${completion_tokens} completion = ${total_tokens} tokens`);
  }
  return finishReason ? 0 : 1; // no finish reason: the answer was cut short
}

process.exitCode = await main();
