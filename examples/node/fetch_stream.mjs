#!/usr/bin/env node
// Streams a chat completion with plain fetch(), reading the server-sent events by hand (sse.mjs):
// what a client without an SDK does, in Node or in a browser.
import { COMMON_USAGE, errorOf, parseCommandLine, requestHeaders } from "./cli.mjs";
import { sseData } from "./sse.mjs";

const USAGE = `usage: node fetch_stream.mjs [options] [prompt]

Streams an answer with fetch(): a ReadableStream reader and a TextDecoder in streaming mode
(sse.mjs), partial lines buffered, keep-alive comments skipped, [DONE] awaited, an error event
reported.

${COMMON_USAGE}`;

const { options, prompt } = parseCommandLine(USAGE);

async function main() {
  const response = await fetch(`${options["base-url"].replace(/\/+$/, "")}/chat/completions`, {
    method: "POST",
    headers: requestHeaders(options["api-key"]),
    body: JSON.stringify({
      model: options.model,
      messages: [{ role: "user", content: prompt }],
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (!response.ok) { // refused before the stream began: the status says why
    console.error(`error: HTTP ${response.status}: ${await errorOf(response)}`);
    return 1;
  }
  let finishReason = null;
  let usage = null;
  try {
    for await (const data of sseData(response.body)) {
      // Strict: an event that is not JSON ends the answer as failed (malformed.mjs skips such events).
      const chunk = JSON.parse(data);
      if (chunk.error) { // the stream failed after it began
        console.error(`\nerror: ${chunk.error.message} (${chunk.error.code})`);
        return 1;
      }
      usage = chunk.usage ?? usage;
      for (const choice of chunk.choices ?? []) {
        process.stdout.write(choice.delta?.content ?? "");
        finishReason = choice.finish_reason ?? finishReason;
      }
    }
  } catch (error) { // the connection was cut, or an event was not JSON
    console.error(`\nerror: the stream failed, the answer is incomplete: ${error.message}${
      error.cause ? ` (${error.cause.message})` : ""}`);
    return 1;
  }
  process.stdout.write("\n");
  console.log(`finish reason: ${finishReason}`);
  if (usage) {
    const { prompt_tokens, completion_tokens, total_tokens } = usage;
    console.log(`usage: ${prompt_tokens} prompt + ${completion_tokens} completion = ${total_tokens} tokens`);
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (error) { // fetch() itself failed: nothing listens there, or the name does not resolve
  console.error(`error: cannot reach the gateway at ${options["base-url"]}: ${error.cause?.code ?? error.message}`);
  process.exitCode = 1;
}
