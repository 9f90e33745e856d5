// pgolf-rt browser demo, the model's side: a module Web Worker that owns the WebAssembly model
// and runs one task at a time (load, score, generate), in small steps. Between steps it yields
// to its event loop, so a "stop" message from the page is seen within one step (one scoring
// window, or one generated token) and the page's main thread never waits on the model.
//
// Messages in:  {type: "load", artifact, tokenizer}          (URLs of the .ptz and .model files)
//               {type: "score", text}                        (window by window, with progress)
//               {type: "generate", prompt, n, temperature, topK, seed}   (token by token)
//               {type: "stop"}                               (ends the running score/generation)
//               {type: "alternatives", target, k}            (top-k at a token of the last score)
//               {type: "check-chunked", text}                (test hook: stepped vs one-call score)
// Messages out: loaded, score-start, score-progress, score-done, score-stopped, gen-start,
//               gen-piece, gen-done, alternatives, check-chunked, error (see each post below).
import init, { WasmModel } from "./pkg/pgolf_rt_wasm.js";

let model = null;
let busy = false; // a score or generation is running
let stopRequested = false;
let lastScore = null; // the ScoreJob of the last finished score (for "alternatives")
let tokensPerSecond = null; // forward tokens per second, measured on earlier windows

const post = (msg) => self.postMessage(msg);

// Lets the worker's event loop run (and deliver a pending "stop") without a timer's clamping.
function yieldToEvents() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

async function load({ artifact, tokenizer }) {
  const t0 = performance.now();
  await init();
  const [a, t] = await Promise.all([fetchBytes(artifact), fetchBytes(tokenizer)]);
  const tFetched = performance.now();
  model = new WasmModel(a, t);
  const tReady = performance.now();
  post({
    type: "loaded",
    info: model.info(),
    artifactBytes: a.length,
    fetchMs: tFetched - t0,
    buildMs: tReady - tFetched,
  });
}

// Seconds left for `windows` more windows of `windowLen` tokens, at the measured rate.
const eta = (windows, windowLen) => (tokensPerSecond ? (windows * windowLen) / tokensPerSecond : null);

async function score({ text }) {
  const t0 = performance.now();
  const job = model.score_job(text); // tokenizes once; throws for an empty text
  let kept = false;
  try {
    kept = await runScore(job, t0);
  } finally {
    if (!kept) job.free();
  }
}

// Steps `job` to its end (true: kept as lastScore) or to a stop request (false).
async function runScore(job, t0) {
  const first = job.progress();
  post({
    type: "score-start",
    ...first,
    window_len: job.window_len,
    byte_fallback_tokens: job.byte_fallback_tokens,
    eta_s: eta(first.windows_total, job.window_len),
  });
  while (!job.done) {
    if (stopRequested) {
      post({ type: "score-stopped", ...job.progress(), ms: performance.now() - t0 });
      return false;
    }
    const ts = performance.now();
    const p = job.step(1);
    const rate = (job.window_len * 1000) / Math.max(performance.now() - ts, 0.1);
    tokensPerSecond = tokensPerSecond ? 0.7 * tokensPerSecond + 0.3 * rate : rate;
    const elapsed = (performance.now() - t0) / 1000;
    post({
      type: "score-progress",
      ...p,
      targets_per_s: p.targets_done / elapsed,
      eta_s: eta(p.windows_total - p.windows_done, job.window_len),
    });
    await yieldToEvents();
  }
  const result = job.result();
  const ms = performance.now() - t0;
  if (lastScore) lastScore.free();
  lastScore = job;
  post({ type: "score-done", result, ms });
  return true;
}

async function generate({ prompt, n, temperature, topK, seed }) {
  const t0 = performance.now();
  const job = model.generator(prompt, n, temperature, topK, BigInt(seed));
  post({
    type: "gen-start",
    prompt_tokens: job.prompt_tokens,
    byte_fallback_tokens: job.prompt_byte_fallback_tokens,
  });
  try {
    let text = "";
    let stopped = false;
    while (!job.done) {
      if (stopRequested) {
        text += job.stop();
        stopped = true;
        break;
      }
      const step = job.step(1);
      text += step.text;
      post({ type: "gen-piece", text: step.text, generated: job.generated, ms: performance.now() - t0 });
      await yieldToEvents();
    }
    post({ type: "gen-done", text, tokens: job.generated, ms: performance.now() - t0, stopped });
  } finally {
    job.free();
  }
}

function alternatives({ target, k }) {
  const list = lastScore ? lastScore.alternatives(target, k) : [];
  post({ type: "alternatives", target, list });
}

// Test hook: the stepped score of `text` (one window per step) against the one-call score.
async function checkChunked({ text }) {
  const job = model.score_job(text);
  let chunked;
  try {
    while (!job.done) {
      job.step(1);
      await yieldToEvents();
    }
    chunked = job.result();
  } finally {
    job.free();
  }
  const whole = model.score(text);
  const sameTokens =
    chunked.tokens.length === whole.tokens.length &&
    chunked.tokens.every((t, i) => t.id === whole.tokens[i].id && t.logprob === whole.tokens[i].logprob);
  post({
    type: "check-chunked",
    chunked: chunked.bits_per_byte,
    whole: whole.bits_per_byte,
    num_tokens: whole.num_tokens,
    sameTokens,
  });
}

const tasks = { load, score, generate, "check-chunked": checkChunked };

self.onmessage = async ({ data }) => {
  if (data.type === "stop") {
    stopRequested = busy;
    return;
  }
  try {
    if (data.type === "alternatives") return alternatives(data);
    const task = tasks[data.type];
    if (!task) throw new Error(`unknown message ${JSON.stringify(data.type)}`);
    if (busy) throw new Error("the model is busy: stop the running task first");
    busy = true;
    stopRequested = false;
    try {
      await task(data);
    } finally {
      busy = false;
      stopRequested = false;
    }
  } catch (e) {
    post({ type: "error", task: data.type, message: String(e && e.message ? e.message : e) });
  }
};
