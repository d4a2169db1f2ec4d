#!/usr/bin/env node
// Streams with fetch() and sse.mjs, skipping events that are not chunks instead of failing the answer.
import { COMMON_USAGE, errorOf, parseCommandLine, requestHeaders } from "./cli.mjs";
import { sseData } from "./sse.mjs";

const USAGE = `usage: node malformed.mjs [options] [prompt]

Streams an answer with fetch() and skips malformed events: a data line that is not JSON, or JSON
that is not a chat completion chunk, is counted and reported on stderr, and the stream goes on.
(The gateway already skips malformed lines from providers, on_malformed: skip; this is for streams
read from elsewhere, or for a client that must never fail on one bad line.)

${COMMON_USAGE}`;

const { options, prompt } = parseCommandLine(USAGE);
const SHOWN_CHARACTERS = 80; // how much of a bad event to show: it may be huge, or hold someone's data

/** The chunk in `data`, or null when it is not one. */
function parseChunk(data) {
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch {
    return null;
  }
  const isObject = chunk !== null && typeof chunk === "object" && !Array.isArray(chunk);
  return isObject && (chunk.error || Array.isArray(chunk.choices)) ? chunk : null;
}

async function main() {
  const response = await fetch(`${options["base-url"].replace(/\/+$/, "")}/chat/completions`, {
    method: "POST",
    headers: requestHeaders(options["api-key"]),
    body: JSON.stringify({ model: options.model, messages: [{ role: "user", content: prompt }], stream: true }),
  });
  if (!response.ok) {
    console.error(`error: HTTP ${response.status}: ${await errorOf(response)}`);
    return 1;
  }
  let skipped = 0;
  let finishReason = null;
  try {
    for await (const data of sseData(response.body)) {
      const chunk = parseChunk(data);
      if (chunk === null) {
        skipped += 1;
        console.error(`\n[skipped a malformed event: ${JSON.stringify(data.slice(0, SHOWN_CHARACTERS))}]`);
        continue;
      }
      if (chunk.error) {
        console.error(`\nerror: ${chunk.error.message} (${chunk.error.code})`);
        return 1;
      }
      for (const choice of chunk.choices) {
        process.stdout.write(choice.delta?.content ?? "");
        finishReason = choice.finish_reason ?? finishReason;
      }
    }
  } catch (error) {
    console.error(`\nerror: the stream failed, the answer is incomplete: ${error.message}`);
    return 1;
  }
  process.stdout.write("\n");
  console.log(`finish reason: ${finishReason}`);
  console.log(`skipped ${skipped} malformed event(s)`);
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) {
  console.error(`error: cannot reach the gateway at ${options["base-url"]}: ${error.cause?.code ?? error.message}`);
  process.exitCode = 1;
}
