// The command line every example here shares: --base-url, --model, --api-key (or GATEWAY_API_KEY), --help.
import { parseArgs } from "node:util";

export const COMMON_USAGE = `\
  --base-url URL   the gateway's API root (default: $GATEWAY_BASE_URL or http://127.0.0.1:8080/v1)
  --model MODEL    provider/model or a route name (default: demo/echo)
  --api-key KEY    a client key, if the gateway asks for one (default: $GATEWAY_API_KEY)
  -h, --help       show this help`;

/** The options and the prompt (the words after them); prints `usage` and exits on --help or a bad option. */
export function parseCommandLine(usage, extraOptions = {}, defaultPrompt = "Hello!") {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        "base-url": { type: "string", default: process.env.GATEWAY_BASE_URL ?? "http://127.0.0.1:8080/v1" },
        model: { type: "string", default: "demo/echo" },
        "api-key": { type: "string", default: process.env.GATEWAY_API_KEY },
        help: { type: "boolean", short: "h", default: false },
        ...extraOptions,
      },
    });
  } catch (error) { // an unknown option or a missing value: say which, then how to call
    console.error(`${error.message}\n\n${usage}`);
    process.exit(2);
  }
  if (parsed.values.help) {
    console.log(usage);
    process.exit(0);
  }
  return { options: parsed.values, prompt: parsed.positionals.join(" ") || defaultPrompt };
}

/** The headers of a streaming request to the gateway. */
export function requestHeaders(apiKey) {
  const headers = { "content-type": "application/json", accept: "text/event-stream" };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  return headers;
}

/** The message of an OpenAI-style error body, or the start of whatever the body is. */
export async function errorOf(response) {
  const body = await response.text();
  try {
    return JSON.parse(body).error.message;
  } catch {
    return body.slice(0, 300);
  }
}
