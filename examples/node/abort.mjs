#!/usr/bin/env node
// Stops an answer early with an AbortController, as a Stop button (or Ctrl-C here) does.
import OpenAI from "openai";
import { COMMON_USAGE, parseCommandLine } from "./cli.mjs";

const USAGE = `usage: node abort.mjs [options] [prompt]

Streams an answer with the openai package and stops it after --after pieces of text (or at Ctrl-C)
with an AbortController. Aborting closes the connection; the gateway sees the client leave and
closes its own request to the provider, so generation (and billing) stops there too. The gateway
logs the request with outcome=client_disconnected:

  INFO gateway.access: request id=<id> request_id=<id> chat key=- provider=demo model=echo stream=True tries=1 outcome=client_disconnected ...

The same signal works with plain fetch: fetch(url, { signal: controller.signal }).

${COMMON_USAGE}
  --after N        stop after N pieces of text (default: 5)`;

const { options, prompt } = parseCommandLine(USAGE, { after: { type: "string", default: "5" } },
                                             "Tell me a long story");
const after = Number.parseInt(options.after, 10);
if (!(after >= 0)) {
  console.error(`--after: expected a number of pieces, got ${JSON.stringify(options.after)}\n\n${USAGE}`);
  process.exit(2);
}
const client = new OpenAI({ baseURL: options["base-url"], apiKey: options["api-key"] ?? "no-key" });
const controller = new AbortController();
process.once("SIGINT", () => controller.abort()); // Ctrl-C stops the answer, not just this process

async function main() {
  let pieces = 0;
  let requestId = "?";
  try {
    const { data: stream, response } = await client.chat.completions
      .create({ model: options.model, messages: [{ role: "user", content: prompt }], stream: true },
              { signal: controller.signal })
      .withResponse();
    requestId = response.headers.get("x-request-id") ?? "?"; // the id in the gateway's log line
    for await (const chunk of stream) {
      if (controller.signal.aborted) break; // Ctrl-C: chunks that had already arrived are not shown
      for (const choice of chunk.choices) {
        if (choice.delta?.content) {
          process.stdout.write(choice.delta.content);
          pieces += 1;
        }
        if (choice.finish_reason) {
          console.log(`\nthe answer ended (${choice.finish_reason}) before ${after} pieces: nothing to stop`);
          return 0;
        }
      }
      if (pieces >= after) {
        controller.abort(); // closes the connection
        break; // chunks that had already arrived would still come out of the loop
      }
    }
  } catch (error) { // an abort while the loop waits for a chunk ends it with an APIUserAbortError
    if (!(error instanceof OpenAI.APIUserAbortError)) {
      const status = error.status ? `HTTP ${error.status}: ` : ""; // a status: refused before the stream began
      console.error(`\nerror: ${status}${error.error?.message ?? error.message}`);
      return 1;
    }
  }
  if (!controller.signal.aborted) { // the stream ended without a finish reason
    console.error("\nerror: the stream ended before the answer was finished");
    return 1;
  }
  console.log(`\n--- stopped after ${pieces} pieces; the gateway logs: request ${requestId} ... outcome=client_disconnected`);
  return 0;
}

process.exitCode = await main();
