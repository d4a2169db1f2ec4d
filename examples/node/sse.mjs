// Server-sent events read by hand from a fetch() response body, for clients without an SDK: a
// ReadableStream reader, a TextDecoder in streaming mode, and a buffer for the line not yet ended.

/**
 * Yields the `data` of each event, up to [DONE]. Network reads end anywhere, in the middle of a line or of
 * a UTF-8 character: both are kept until the rest arrives. Comments (": keep-alive") are counted in
 * `stats.comments` and skipped. Throws if the stream ends without [DONE] (the connection was cut).
 * Lines end with "\n" or "\r\n", as OpenAI-compatible servers send them.
 */
const MAX_LINE_CHARS = 1_000_000; // a line longer than this is not a chat completion stream: stop reading it

export async function* sseData(body, stats = { comments: 0 }) {
  const reader = body.getReader();
  const decoder = new TextDecoder("utf-8");
  let partial = ""; // the start of a line whose end has not arrived yet
  let data = []; // the data lines of the event being read
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      // stream: true keeps the bytes of a character cut between two reads until its last byte comes
      const lines = (partial + decoder.decode(value, { stream: true })).split("\n");
      partial = lines.pop(); // after the last newline: the start of the next line
      if (partial.length > MAX_LINE_CHARS) {
        throw new Error(`a line longer than ${MAX_LINE_CHARS} characters: not an event stream`);
      }
      for (let line of lines) {
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") { // a blank line ends an event
          if (data.length === 0) continue;
          const event = data.join("\n");
          data = [];
          if (event === "[DONE]") return;
          yield event;
        } else if (line.startsWith(":")) {
          stats.comments += 1; // proves the connection is alive; nothing to show
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1);
          if (field === "data") data.push(value.startsWith(" ") ? value.slice(1) : value);
          // event:, id: and retry: are not used by chat completion streams
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // if the caller stopped early, this closes the connection
  }
  throw new Error("the stream ended without [DONE]: the connection was cut");
}
