// Streaming a chat completion from the gateway with fetch: no SDK, no dependency.

/** An error the UI shows as it is: the gateway's own message when it sent one. */
export class ChatError extends Error {
  constructor(message, status = null) {
    super(message);
    this.name = "ChatError";
    this.status = status;
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// Server-sent events from a fetch body: yields each event's data. TextDecoder in streaming mode keeps a
// character cut between two reads whole; a line cut between two reads waits in `buffer`.
export async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // a "\r" that ends a read may be the first half of "\r\n": it waits for the next read
      const held = !done && buffer.endsWith("\r") ? "\r" : "";
      const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\n|\r/);
      buffer = done ? "" : lines.pop() + held;
      for (const line of lines) {
        if (line === "") {
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line[5] === " " ? 6 : 5));
        } // ": keep-alive" comments carry nothing
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * POSTs `body` to the gateway's /v1/chat/completions as a stream and calls `onChunk` with each chunk.
 * Resolves when the stream is complete ([DONE]); rejects with a ChatError on an HTTP error, an error event
 * in the stream or a stream cut short, and with an AbortError when `signal` aborts (which closes the
 * connection: the gateway then cancels the provider's request).
 */
export async function streamChat({ gateway, apiKey, body, signal, onChunk }) {
  const headers = { "Content-Type": "application/json" };
  if (apiKey) headers.Authorization = `Bearer ${apiKey}`;
  const response = await fetch(`${gateway}/v1/chat/completions`, {
    method: "POST",
    headers,
    signal,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!response.ok) throw new ChatError(await errorMessage(response), response.status);
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      continue; // not JSON: skip it, the stream goes on
    }
    if (chunk.error) throw new ChatError(chunk.error.message ?? "the stream failed");
    onChunk(chunk);
  }
  throw new ChatError("the stream ended before it was complete: the answer is partial");
}
