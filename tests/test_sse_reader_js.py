"""The hand-written SSE reader the React example ships (examples/react/src/stream.js), run under node on
every split of the same bytes: wherever a read ends, even between the "\\r" and "\\n" of one line end,
the events are the same. With CI=true a missing node fails instead of skipping."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.node_examples import require

STREAM_JS = Path(__file__).resolve().parents[1] / "examples" / "react" / "src" / "stream.js"

# Reads every split of BYTES in two (and one byte at a time), then prints the events of each as JSON.
SCRIPT = """
import { sseData } from %(module)s;
const bytes = new TextEncoder().encode(%(text)s);
function body(parts) {
  return new ReadableStream({ start(c) { for (const p of parts) c.enqueue(p); c.close(); } });
}
async function events(parts) {
  const out = [];
  for await (const data of sseData(body(parts))) out.push(data);
  return out;
}
const results = [];
for (let at = 0; at <= bytes.length; at++) results.push(await events([bytes.slice(0, at), bytes.slice(at)]));
results.push(await events(Array.from(bytes, (b) => Uint8Array.of(b))));
console.log(JSON.stringify(results));
"""

TEXT = "data: first\r\ndata: second\r\n\r\n: keep-alive\r\n\r\ndata: {\"é\": 1}\n\ndata: [DONE]\r\n\r\n"
EXPECTED = ["first\nsecond", '{"é": 1}', "[DONE]"]


def test_every_split_of_the_same_bytes_gives_the_same_events() -> None:
    node = require("node")
    script = SCRIPT % {"module": json.dumps(STREAM_JS.as_uri()), "text": json.dumps(TEXT)}
    run = subprocess.run([node, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    assert len(results) == len(TEXT.encode()) + 2
    for split, events in enumerate(results):
        assert events == EXPECTED, f"split {split}: {events}"
