"use strict";
// The gateway's playground: one streamed chat request at a time, painted at most once per animation frame.

const $ = (id) => document.getElementById(id);
const els = {
  form: $("ask"), model: $("model"), key: $("key"), prompt: $("prompt"), send: $("send"), stop: $("stop"),
  typing: $("typing"), status: $("status"), error: $("error"), answer: $("answer"), reasoning: $("reasoning"),
  reasoningBox: $("reasoning-box"), ttft: $("ttft"), tps: $("tps"), usage: $("usage"), finish: $("finish"),
  requestId: $("request-id"),
};
const KEY_STORE = "gateway-playground-key"; // sessionStorage: gone when the tab closes

let controller = null; // the AbortController of the request in flight

function setState(state) {
  document.body.dataset.state = state; // idle | waiting | streaming | done | stopped | error
  const busy = state === "waiting" || state === "streaming";
  els.send.disabled = busy;
  els.stop.disabled = !busy;
  els.typing.hidden = state !== "waiting";
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = false;
  setState("error");
}

function requestHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = els.key.value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error?.message ?? `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

async function loadModels() {
  els.status.textContent = "loading models…";
  try {
    const response = await fetch("/v2/models", { headers: requestHeaders() });
    if (!response.ok) {
      els.status.textContent = response.status === 401 ? "paste a client key" : "";
      showError(await errorMessage(response));
      return;
    }
    const { data } = await response.json();
    const chosen = els.model.value;
    els.model.replaceChildren(...data.map((model) => new Option(model.id, model.id)));
    if (data.some((model) => model.id === chosen)) els.model.value = chosen;
    els.status.textContent = `${data.length} model${data.length === 1 ? "" : "s"}`;
    els.error.hidden = true;
    setState("idle");
  } catch (err) {
    showError(`could not list the models: ${err.message}`);
  }
}

// Text arrives many times a frame on a fast stream: keep it here and touch the DOM once per frame.
const painter = {
  answer: "", reasoning: "", frame: 0, stats: null,
  add(field, text) {
    this[field] += text;
    this.schedule();
  },
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  },
  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = 0;
    if (this.answer) els.answer.append(this.answer); // a new text node: no re-layout of what is there
    if (this.reasoning) {
      els.reasoningBox.hidden = false;
      els.reasoning.append(this.reasoning);
    }
    this.answer = this.reasoning = "";
    if (this.stats) showStats(this.stats);
  },
};

function showStats(stats) {
  if (stats.firstAt !== null) els.ttft.textContent = `${Math.round(stats.firstAt - stats.startedAt)} ms`;
  // The tokens after the first, over the time since the first: a rate once there is time to measure.
  const seconds = (stats.lastAt - stats.firstAt) / 1000;
  const tokens = stats.usage?.completion_tokens ?? stats.pieces; // pieces: an estimate until usage arrives
  if (stats.firstAt !== null && seconds >= 0.05) els.tps.textContent = ((tokens - 1) / seconds).toFixed(1);
  if (stats.usage) {
    const { prompt_tokens: prompt, completion_tokens: completion, total_tokens: total } = stats.usage;
    els.usage.textContent = `${prompt} prompt + ${completion} completion = ${total} tokens`;
  }
  if (stats.finish) els.finish.textContent = stats.finish;
}

// Server-sent events from a fetch body: yields each event's data. TextDecoder in streaming mode keeps a
// character cut between two reads whole; a line cut between two reads waits in `buffer`.
async function* sseData(body) {
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
        } // ": keep-alive" comments and other fields carry nothing for us
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

function applyChunk(chunk, stats) {
  if (chunk.usage) stats.usage = chunk.usage;
  for (const choice of chunk.choices ?? []) {
    const delta = choice.delta ?? {};
    const text = delta.content ?? "";
    const thought = delta.reasoning_content ?? "";
    if (text || thought) {
      stats.lastAt = performance.now();
      if (stats.firstAt === null) {
        stats.firstAt = stats.lastAt;
        setState("streaming");
      }
      stats.pieces += 1;
      if (text) painter.add("answer", text);
      if (thought) painter.add("reasoning", thought);
    }
    if (choice.finish_reason) stats.finish = choice.finish_reason;
  }
  painter.schedule();
}

async function send(event) {
  event.preventDefault();
  if (controller) return;
  controller = new AbortController();
  els.answer.textContent = els.reasoning.textContent = "";
  els.reasoningBox.hidden = els.error.hidden = true;
  for (const el of [els.ttft, els.tps, els.usage, els.finish, els.requestId]) el.textContent = "–";
  const stats = { startedAt: performance.now(), firstAt: null, lastAt: 0, pieces: 0, usage: null, finish: null };
  painter.stats = stats;
  setState("waiting");
  try {
    const response = await fetch("/v2/chat/completions", {
      method: "POST",
      headers: requestHeaders(),
      signal: controller.signal,
      body: JSON.stringify({
        model: els.model.value,
        messages: [{ role: "user", content: els.prompt.value }],
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    els.requestId.textContent = response.headers.get("x-request-id") ?? "–";
    if (!response.ok) throw new Error(await errorMessage(response));
    let complete = false;
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") {
        complete = true;
        break;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        continue; // not JSON: skip it, the stream goes on
      }
      if (chunk.error) throw new Error(chunk.error.message ?? "the stream failed");
      applyChunk(chunk, stats);
    }
    if (!complete) throw new Error("the stream ended before it was complete: what is shown is partial");
    painter.flush();
    setState("done");
  } catch (err) {
    painter.flush();
    if (err.name === "AbortError") setState("stopped");
    else showError(err.message);
  } finally {
    controller = null;
  }
}

els.form.addEventListener("submit", send);
els.stop.addEventListener("click", () => controller?.abort());
els.key.value = sessionStorage.getItem(KEY_STORE) ?? "";
els.key.addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORE, els.key.value.trim());
  loadModels();
});
setState("idle");
loadModels();
