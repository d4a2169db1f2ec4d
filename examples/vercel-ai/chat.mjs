#!/usr/bin/env node
// The Vercel AI SDK talking to the gateway through its OpenAI-compatible provider.
//
//   node chat.mjs [--base-url URL] [--model MODEL] [--scenario SCENARIO] [--api-key KEY]
//                 [--provider-name NAME] [prompt]
//
// Scenarios: "stream" (streamText: text and reasoning), "tools" (streamText with two tools whose
// arguments stream in), "generate" (generateText), "generate-tools" (generateText with the tools),
// "agent" (streamText that runs the tools it is asked for and sends their results back: two steps).
// Prints one JSON summary on stdout: text, reasoning, tool calls with parsed input, finish reason,
// usage, errors. While streaming to a terminal, the text also goes to stderr as it arrives.
import { parseArgs } from "node:util";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, stepCountIs, streamText, tool } from "ai";
import { z } from "zod";

const USAGE = `usage: node chat.mjs [--base-url URL] [--model MODEL] [--scenario SCENARIO] [--api-key KEY]
                     [--provider-name NAME] [prompt]

Runs the Vercel AI SDK against the gateway and prints a JSON summary of the answer.

  --base-url URL        the gateway's API root (default: $GATEWAY_BASE_URL or http://127.0.0.1:8080/v1)
  --model MODEL         provider/model or a route name (default: demo/echo)
  --scenario SCENARIO   stream, tools, generate, generate-tools or agent (default: stream)
  --api-key KEY         a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)
  --provider-name NAME  the SDK provider's name; "google" for Gemini 3 thought signatures (default: gateway)
  -h, --help            show this help`;

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      "base-url": { type: "string", default: process.env.GATEWAY_BASE_URL ?? "http://127.0.0.1:8080/v1" },
      model: { type: "string", default: "demo/echo" },
      scenario: { type: "string", default: "stream" },
      "api-key": { type: "string", default: process.env.GATEWAY_API_KEY },
      // The key of the SDK's provider metadata. @ai-sdk/openai-compatible 2.x sends a Gemini 3 tool call's
      // thought signature back on the next step only when it is "google" (3.x, for Node 22, any name).
      "provider-name": { type: "string", default: "gateway" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
} catch (error) { // an unknown option or a missing value: say which, then how to call
  console.error(`${error.message}\n\n${USAGE}`);
  process.exit(2);
}
if (parsed.values.help) {
  console.log(USAGE);
  process.exit(0);
}
const { values: options, positionals } = parsed;
const SCENARIOS = ["stream", "tools", "generate", "generate-tools", "agent"];
if (!SCENARIOS.includes(options.scenario)) {
  console.error(`unknown scenario ${options.scenario}; one of ${SCENARIOS.join(", ")}`);
  process.exit(2);
}

const gateway = createOpenAICompatible({
  name: options["provider-name"],
  baseURL: options["base-url"],
  apiKey: options["api-key"],
  includeUsage: true, // sends stream_options.include_usage, so streams end with a usage chunk
});

// Without `execute` the calls come back to us instead of being run, which is what the summary shows;
// the agent scenario runs them (with made-up answers) and lets the model see the results.
const tools = {
  get_weather: tool({
    description: "The current weather in a city",
    inputSchema: z.object({ city: z.string() }),
  }),
  get_time: tool({
    description: "The current time, in a time zone if given",
    inputSchema: z.object({ tz: z.string().optional() }),
  }),
};

const runTools = {
  get_weather: { ...tools.get_weather, execute: async ({ city }) => ({ city, temperature_c: 12, sky: "cloudy" }) },
  get_time: { ...tools.get_time, execute: async ({ tz }) => ({ tz: tz ?? "UTC", time: "12:00" }) },
};

const withTools = options.scenario.endsWith("tools") || options.scenario === "agent";
const call = {
  model: gateway.chatModel(options.model),
  prompt: positionals.join(" ") || (withTools ? "What is the weather and the time in Paris?" : "Hello!"),
  tools: options.scenario === "agent" ? runTools : withTools ? tools : undefined,
  stopWhen: stepCountIs(options.scenario === "agent" ? 2 : 1),
  maxRetries: 0, // show the gateway's answer as it is; the gateway retries upstream itself
};

function describeError(error) {
  return {
    name: error?.name ?? null, // null for a mid-stream error event: the SDK passes on its parsed `error` object
    message: error?.message ?? String(error),
    statusCode: error?.statusCode,
    isRetryable: error?.isRetryable,
    responseBody: error?.responseBody,
    code: error?.code ?? error?.data?.error?.code,
    type: error?.type ?? error?.data?.error?.type,
  };
}

function describeUsage(usage) {
  if (!usage) return null;
  return {
    inputTokens: usage.inputTokens,
    outputTokens: usage.outputTokens,
    totalTokens: usage.totalTokens,
    reasoningTokens: usage.outputTokenDetails?.reasoningTokens,
    cachedInputTokens: usage.inputTokenDetails?.cacheReadTokens,
  };
}

function describeToolCall(toolCall) {
  return { id: toolCall.toolCallId, name: toolCall.toolName, input: toolCall.input, invalid: toolCall.invalid ?? false };
}

async function runStream() {
  const summary = { text: "", reasoning: "", toolCalls: [], toolInputDeltas: {}, toolResults: [], steps: 0,
                    finishReason: null, rawFinishReason: null, usage: null, errors: [] };
  const result = streamText({ ...call, onError: () => {} }); // errors are collected from the stream below
  for await (const part of result.fullStream) {
    switch (part.type) {
      case "text-delta":
        summary.text += part.text;
        if (process.stderr.isTTY) process.stderr.write(part.text);
        break;
      case "reasoning-delta":
        summary.reasoning += part.text;
        break;
      case "tool-input-delta":
        (summary.toolInputDeltas[part.id] ??= []).push(part.delta);
        break;
      case "tool-call":
        summary.toolCalls.push(describeToolCall(part));
        break;
      case "tool-result":
        summary.toolResults.push({ id: part.toolCallId, name: part.toolName, output: part.output });
        break;
      case "finish-step":
        summary.steps += 1;
        break;
      case "tool-error":
        summary.errors.push({ ...describeError(part.error), toolCallId: part.toolCallId });
        break;
      case "error":
        summary.errors.push(describeError(part.error));
        break;
      case "finish":
        summary.finishReason = part.finishReason;
        summary.rawFinishReason = part.rawFinishReason ?? null;
        summary.usage = describeUsage(part.totalUsage);
        break;
    }
  }
  if (process.stderr.isTTY) process.stderr.write("\n");
  return summary;
}

async function runGenerate() {
  try {
    const result = await generateText(call);
    return {
      text: result.text, reasoning: result.reasoningText ?? "", toolCalls: result.toolCalls.map(describeToolCall),
      finishReason: result.finishReason, rawFinishReason: result.rawFinishReason ?? null,
      usage: describeUsage(result.totalUsage), errors: [],
    };
  } catch (error) {
    return { text: "", reasoning: "", toolCalls: [], finishReason: null, usage: null, errors: [describeError(error)] };
  }
}

const summary = options.scenario.startsWith("generate") ? await runGenerate() : await runStream();
process.stdout.write(JSON.stringify({ scenario: options.scenario, model: options.model, ...summary }, null, 2) + "\n");
process.exitCode = summary.errors.length ? 1 : 0;
