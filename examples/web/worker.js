// pgolf-rt browser demo, the model's side: a module Web Worker that owns the WebAssembly model
// and runs one task at a time (load, score, generate), in small steps. Between steps it yields
// to its event loop, so a "stop" message from the page is seen within one step (one layer of a
// scoring window, or one generated token) and the page's main thread never waits on the model.
//
// Messages in:  {type: "load", artifact, tokenizer, cache, name, demo, webgpu}
//                    (artifact: a URL or a File; tokenizer: a URL; cache: keep URL downloads in the Cache API;
//                    webgpu: also build the model on the browser's WebGPU, where it has an adapter)
//               {type: "score", text, on}                    (window by window, with progress; on: "webgpu" or
//                                                             "cpu", default: WebGPU on a hardware adapter)
//               {type: "generate", prompt, n, temperature, topK, seed}   (token by token)
//               {type: "evaluate", text, plan}                 (WasmModel.evaluate: windows, TTT, mixer, audit)
//               {type: "stop"}                               (ends the running score/generation)
//               {type: "alternatives", target, k}            (top-k at a token of the last score)
//               {type: "check-chunked", text}                (test hook: layer-stepped vs one-call score)
// Messages out: load-progress, loaded, score-start, score-progress, score-done, score-stopped, gen-start,
//               gen-piece, gen-done, eval-progress, eval-done, alternatives, check-chunked,
//               error (see each post below).
import init, { GpuScoreJob, WasmModel, gpuModel } from "./pkg/pgolf_rt_wasm.js";

let model = null;
// The same model on the browser's WebGPU (scoring only: generation and evaluation stay on the
// CPU model), or null: no WebGPU here, no adapter, or not asked for.
let gpu = null;
let gpuPreferred = false; // a hardware adapter: scores run there unless a task asks for the CPU
let stopWaiter = null; // resolves the wait for a WebGPU pass when a "stop" arrives
let busy = false; // a score or generation is running
let stopRequested = false;
let lastScore = null; // the ScoreJob of the last finished score (for "alternatives")
let tokensPerSecond = null; // forward tokens per second, measured on earlier windows
const SLICE_MS = 30; // longest run of layer steps between two looks at the message queue

const post = (msg) => self.postMessage(msg);

// Lets the worker's event loop run (and deliver a pending "stop") without a timer's clamping.
function yieldToEvents() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

// A challenge artifact is at most 16,000,000 bytes; anything far larger is refused before it
// fills the tab's memory.
const MAX_ARTIFACT_BYTES = 64 * 1024 * 1024;
const CACHE_NAME = "pgolf-rt-models"; // the Cache API store of artifacts loaded by URL
const tooLarge = (what, n) =>
  new Error(`${what} is ${n.toLocaleString("en-US")} bytes, over the ${MAX_ARTIFACT_BYTES / 1048576} MiB ` +
    "limit: a challenge artifact is at most 16 MB");

// The body of `url`, read chunk by chunk, posting {type: "load-progress", received, total}
// (total: null when the server does not say).
async function download(url, progress) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  const total = Number(res.headers.get("content-length")) || null;
  if (total !== null && total > MAX_ARTIFACT_BYTES) throw tooLarge(url, total);
  if (!progress || !res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const parts = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value.length;
    if (received > MAX_ARTIFACT_BYTES) {
      await reader.cancel();
      throw tooLarge(url, received);
    }
    parts.push(value);
    post({ type: "load-progress", received, total });
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return bytes;
}

// The artifact's bytes and where they came from: a File/Blob the user picked or dropped
// ("file"), or a URL, from the Cache API when `cache` and it is there ("cache"), else the
// network ("network", then stored in the cache when `cache`).
async function artifactBytes(artifact, cache) {
  if (artifact instanceof Blob) {
    if (artifact.size > MAX_ARTIFACT_BYTES) throw tooLarge(artifact.name || "the file", artifact.size);
    return { bytes: new Uint8Array(await artifact.arrayBuffer()), source: "file" };
  }
  const store = cache && self.caches ? await caches.open(CACHE_NAME) : null;
  const hit = store ? await store.match(artifact) : undefined;
  if (hit) return { bytes: new Uint8Array(await hit.arrayBuffer()), source: "cache" };
  const bytes = await download(artifact, true);
  if (store) await store.put(artifact, new Response(bytes, { headers: { "content-type": "application/octet-stream" } }));
  return { bytes, source: "network", cacheMissing: cache && !store };
}

// Loads a model: `artifact` a URL or a File, `tokenizer` a URL. The running model is replaced
// only once the new one is ready: a bad artifact leaves the page with the model it had.
// The model on WebGPU, or why not: {gpu, adapter} or {gpu: null, why}.
async function openGpu(bytes, tokenizer, wanted) {
  if (!wanted) return { gpu: null, why: "WebGPU not asked for (?compute=cpu)" };
  if (!self.navigator || !navigator.gpu) return { gpu: null, why: "this browser offers no WebGPU (navigator.gpu)" };
  try {
    const g = await gpuModel(bytes, tokenizer);
    const adapter = g.adapter();
    // The browser's own words for its adapter (wgpu's name is often empty on the web).
    const a = await navigator.gpu.requestAdapter().catch(() => null);
    const info = (a && a.info) || {};
    adapter.browser = [info.vendor, info.architecture, info.description].filter(Boolean).join(" ");
    if (!adapter.name) adapter.name = adapter.browser;
    return { gpu: g, adapter };
  } catch (e) {
    return { gpu: null, why: String(e && e.message ? e.message : e) };
  }
}

async function load({ artifact, tokenizer, cache = false, name, demo = false, webgpu = true }) {
  const t0 = performance.now();
  await init();
  const [a, t] = await Promise.all([artifactBytes(artifact, cache), download(tokenizer, false)]);
  const tFetched = performance.now();
  const next = new WasmModel(a.bytes, t);
  const tReady = performance.now();
  const g = await openGpu(a.bytes, t, webgpu);
  const tGpu = performance.now();
  if (lastScore) lastScore.free();
  lastScore = null;
  if (model) model.free();
  if (gpu) gpu.free();
  model = next;
  gpu = g.gpu;
  gpuPreferred = gpu !== null && g.adapter.device_type !== "Cpu";
  tokensPerSecond = null;
  post({
    type: "loaded",
    // A software adapter (device type Cpu: SwiftShader, WARP) is not chosen by default.
    webgpu: gpu ? { adapter: g.adapter, ms: tGpu - tReady, preferred: g.adapter.device_type !== "Cpu" } : null,
    webgpuWhy: gpu ? "" : g.why,
    info: model.info(),
    artifactBytes: a.bytes.length,
    source: a.source,
    cacheMissing: Boolean(a.cacheMissing),
    name,
    demo,
    fetchMs: tFetched - t0,
    buildMs: tReady - tFetched,
  });
}

// Seconds left for `windows` more windows of `windowLen` tokens, at the measured rate.
const eta = (windows, windowLen) => (tokensPerSecond ? (windows * windowLen) / tokensPerSecond : null);

async function score({ text, on }) {
  const t0 = performance.now();
  const onGpu = on === "webgpu" || (on === undefined && gpuPreferred);
  if (onGpu && !gpu) throw new Error("this model has no WebGPU path here");
  // Tokenizes once; throws for an empty text.
  const job = onGpu ? gpu.score_job(text) : model.score_job(text);
  let kept = false;
  try {
    kept = await (onGpu ? runGpuScore(job, t0) : runScore(job, t0));
  } finally {
    if (!kept) job.free();
  }
}

function postStart(job, on) {
  const first = job.progress();
  post({
    type: "score-start",
    ...first,
    on,
    window_len: job.window_len,
    byte_fallback_tokens: job.byte_fallback_tokens,
    eta_s: eta(first.windows_total, job.window_len),
  });
}

// The finished `job` becomes lastScore (for "alternatives").
function postDone(job, t0, on) {
  const result = job.result();
  const ms = performance.now() - t0;
  if (lastScore) lastScore.free();
  lastScore = job;
  post({ type: "score-done", result, ms, on });
  return true;
}

// Posts progress `p` after a slice of work that ran `tokens` forward tokens since `ts`
// (updating the measured rate behind the estimates); the score started at `t0`.
function postProgress(p, tokens, ts, t0, windowLen) {
  const rate = (tokens * 1000) / Math.max(performance.now() - ts, 0.1);
  tokensPerSecond = tokensPerSecond ? 0.7 * tokensPerSecond + 0.3 * rate : rate;
  const elapsed = (performance.now() - t0) / 1000;
  post({
    type: "score-progress",
    ...p,
    targets_per_s: p.targets_done / elapsed,
    eta_s: eta(p.windows_total - p.windows_done - p.pass_layers_done / p.layers, windowLen),
  });
}

// Resolves false when a "stop" arrives (see onmessage).
const stopSignal = () => new Promise((resolve) => (stopWaiter = () => resolve(false)));

// `job` (a GpuScoreJob) to its end, a window's pass at a time: queue the pass, wait for its
// scores to come back from the GPU (the event loop runs meanwhile, so a stop ends the wait at
// once and the pass is dropped), take them.
async function runGpuScore(job, t0) {
  postStart(job, "webgpu");
  while (!job.done) {
    if (stopRequested) {
      post({ type: "score-stopped", ...job.progress(), ms: performance.now() - t0 });
      return false;
    }
    const ts = performance.now();
    const ready = job.submit();
    if (ready === null) break;
    const arrived = await Promise.race([ready.then(() => true), stopSignal()]);
    stopWaiter = null;
    if (!arrived) continue; // stopRequested is set: reported at the top of the loop
    postProgress(job.collect(), job.window_len, ts, t0, job.window_len);
  }
  return postDone(job, t0, "webgpu");
}

// Steps `job` (a ScoreJob, on the CPU) to its end (true: kept as lastScore) or to a stop
// request (false).
async function runScore(job, t0) {
  postStart(job, "cpu");
  while (!job.done) {
    if (stopRequested) {
      post({ type: "score-stopped", ...job.progress(), ms: performance.now() - t0 });
      return false;
    }
    // Layer by layer for up to SLICE_MS, then yield: a stop is seen within one layer of one
    // window (a 1,024-token window of a 9-layer model takes seconds in WebAssembly).
    const ts = performance.now();
    let p;
    let layers = 0;
    do {
      p = job.step_layers(1);
      layers++;
    } while (!job.done && performance.now() - ts < SLICE_MS);
    postProgress(p, (layers / p.layers) * job.window_len, ts, t0, job.window_len);
    await yieldToEvents();
  }
  return postDone(job, t0, "cpu");
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

// One evaluation, in one call, posting progress as it goes; it cannot see a "stop" message, so
// the page stops it by ending this worker (and starting another with the same model).
function evaluate({ text, plan }) {
  const t0 = performance.now();
  const report = model.evaluate(text, plan, (done, total, unit, bpb) =>
    post({ type: "eval-progress", done, total, unit, bits_per_byte: bpb }),
  );
  post({ type: "eval-done", plan, report, ms: performance.now() - t0 });
}

function alternatives({ target, k }) {
  // No score here: this worker replaced one whose evaluation was stopped (the page's score
  // came from the old one).
  if (!lastScore) return post({ type: "alternatives", target, list: "unavailable" });
  // A score from WebGPU asks the CPU model (the same weights) for the ranking: reading it from
  // the GPU would mean waiting.
  const list = lastScore instanceof GpuScoreJob ? lastScore.alternatives(target, k, model) : lastScore.alternatives(target, k);
  post({ type: "alternatives", target, list });
}

// Test hook: the stepped score of `text` (layer steps, with a window step every fifth) against
// the one-call score.
async function checkChunked({ text }) {
  const job = model.score_job(text);
  let chunked;
  let steps = 0;
  try {
    while (!job.done) {
      if (++steps % 5 === 0) job.step(1);
      else job.step_layers(1);
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

const tasks = { load, score, generate, evaluate, "check-chunked": checkChunked };

self.onmessage = async ({ data }) => {
  if (data.type === "stop") {
    stopRequested = busy;
    if (busy && stopWaiter) stopWaiter();
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
