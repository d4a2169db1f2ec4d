import { memo, useEffect, useRef, useState } from "react";
import { streamChat } from "./stream.js";

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

function emptyAnswer() {
  return { role: "assistant", content: "", reasoning: "", toolCalls: [], pieces: 0, paints: 0, usage: null };
}

// Adds one chunk to the answer being received (mutated in place: it is not React state).
function addChunk(answer, chunk) {
  if (chunk.usage) answer.usage = chunk.usage;
  for (const choice of chunk.choices ?? []) {
    if (choice.index !== 0) continue;
    const delta = choice.delta ?? {};
    if (delta.content) answer.content += delta.content;
    if (delta.reasoning_content) answer.reasoning += delta.reasoning_content;
    for (const call of delta.tool_calls ?? []) { // accumulated by index: arguments arrive in pieces
      const slot = (answer.toolCalls[call.index] ??= { id: "", name: "", arguments: "" });
      if (call.id) slot.id = call.id;
      if (call.function?.name && !slot.name) slot.name = call.function.name;
      if (call.function?.arguments) slot.arguments += call.function.arguments;
    }
    if (delta.content || delta.reasoning_content || delta.tool_calls) answer.pieces += 1;
  }
}

const Turn = memo(function Turn({ turn, live = false }) {
  if (turn.role === "user") {
    return <li className="turn user"><p>{turn.content}</p></li>;
  }
  return (
    <li className={live ? "turn assistant live" : "turn assistant"}>
      {turn.reasoning && (
        <details className="reasoning" open>
          <summary>Reasoning</summary>
          <p>{turn.reasoning}</p>
        </details>
      )}
      {turn.content && <p className="content">{turn.content}</p>}
      {turn.toolCalls.filter(Boolean).map((call, i) => (
        <pre className="tool-call" key={call.id || i}>{call.name}({call.arguments})</pre>
      ))}
      {turn.note && <p className="note">{turn.note}</p>}
    </li>
  );
});

/**
 * A chat that streams from the gateway. Chunks can come many times per frame, so they are added to
 * `received` (a ref) and painted at most once per animation frame: one render per frame, not per token.
 */
export function Chat({ gateway, model }) {
  const [turns, setTurns] = useState([]); // finished turns, user's and assistant's
  const [answer, setAnswer] = useState(null); // the answer streaming now, as last painted
  const [status, setStatus] = useState("idle"); // idle | waiting | streaming | done | stopped | error
  const [error, setError] = useState(null);
  const [input, setInput] = useState("");
  const [apiKey, setApiKey] = useState(""); // in memory only
  const [offerTool, setOfferTool] = useState(false);
  const received = useRef(null);
  const frame = useRef(0);
  const controller = useRef(null);
  const lastMessages = useRef(null); // what Retry sends again

  useEffect(() => () => { // unmounting: stop the stream and the pending paint
    controller.current?.abort();
    cancelAnimationFrame(frame.current);
  }, []);

  function paint() {
    frame.current = 0;
    const current = received.current;
    current.paints += 1;
    setAnswer({ ...current, toolCalls: current.toolCalls.map((call) => call && { ...call }) });
  }

  function paintNow() {
    cancelAnimationFrame(frame.current);
    paint();
  }

  async function run(messages) {
    lastMessages.current = messages;
    controller.current = new AbortController();
    received.current = emptyAnswer();
    setAnswer(null);
    setError(null);
    setStatus("waiting");
    let started = false;
    try {
      await streamChat({
        gateway,
        apiKey,
        signal: controller.current.signal,
        body: { model, messages, ...(offerTool ? { tools: [WEATHER_TOOL] } : {}) },
        onChunk(chunk) {
          addChunk(received.current, chunk);
          if (!started && received.current.pieces > 0) {
            started = true;
            setStatus("streaming"); // the typing indicator goes at the first token
          }
          if (!frame.current) frame.current = requestAnimationFrame(paint);
        },
      });
      paintNow();
      finish("done");
    } catch (err) {
      paintNow();
      if (err.name === "AbortError") {
        finish("stopped", "stopped");
      } else {
        setError(err.message);
        setStatus("error"); // the partial answer stays in view, not in the history: Retry replaces it
      }
    } finally {
      controller.current = null;
    }
  }

  function finish(nextStatus, note) {
    const done = { ...received.current, note };
    setTurns((previous) => [...previous, done]);
    setAnswer(null);
    setStatus(nextStatus);
  }

  function send(event) {
    event.preventDefault();
    const text = input.trim();
    if (!text || controller.current) return;
    const user = { role: "user", content: text };
    const history = [...turns, user]
      .filter((turn) => turn.role === "user" || turn.content)
      .map((turn) => ({ role: turn.role, content: turn.content }));
    setTurns((previous) => [...previous, user]);
    setInput("");
    run(history);
  }

  const busy = status === "waiting" || status === "streaming";
  const last = answer ?? [...turns].reverse().find((turn) => turn.role === "assistant");
  return (
    <div className="chat" data-status={status}>
      <header>
        <span>Gateway <code>{gateway}</code>, model <code>{model}</code></span>
        <label>
          Client key <input type="password" value={apiKey} onChange={(e) => setApiKey(e.target.value)}
                            placeholder="if the gateway asks for one" autoComplete="off" />
        </label>
        <label>
          <input type="checkbox" checked={offerTool} onChange={(e) => setOfferTool(e.target.checked)} />
          offer a get_weather tool
        </label>
      </header>
      <ol className="turns">
        {turns.map((turn, i) => <Turn key={i} turn={turn} />)}
        {answer && <Turn turn={answer} live />}
      </ol>
      {status === "waiting" && <p className="typing" aria-label="waiting for the answer"><span /><span /><span /></p>}
      {status === "error" && (
        <div className="error" role="alert">
          <span>{error}</span>
          <button type="button" onClick={() => run(lastMessages.current)}>Retry</button>
        </div>
      )}
      <form onSubmit={send}>
        <textarea value={input} onChange={(e) => setInput(e.target.value)} rows={3} placeholder="Ask something"
                  aria-label="Message" />
        <button type="submit" disabled={busy || !input.trim()}>Send</button>
        <button type="button" onClick={() => controller.current?.abort()} disabled={!busy}>Stop</button>
      </form>
      {last && (
        <p className="stats">
          {last.pieces} pieces in {last.paints} paints
          {last.usage && `, ${last.usage.prompt_tokens} prompt + ${last.usage.completion_tokens} completion tokens`}
        </p>
      )}
    </div>
  );
}
