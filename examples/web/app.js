// pgolf-rt browser demo, the page's side: plain ES module, no bundler. The model runs in a Web
// Worker (worker.js); this module only checks the fields, sends the worker tasks, shows their
// progress and results as messages arrive, and sends "stop". It never runs the model itself, so
// the page stays responsive whatever the worker is doing.
import { describe, drawLegend, renderTokens } from "./heatmap.js";

const $ = (id) => document.getElementById(id);
const fmt = (n) => n.toLocaleString("en-US");

// State read by scripts/browser-test.sh (and handy in the console).
const state = (window.pgolf = {
  ready: false,
  error: null,
  path: "wasm-cpu", // where the last score ran: "wasm-cpu" (WebAssembly, in a worker) or "webgpu"
  webgpu: null, // the model on WebGPU: {adapter: {name, backend, device_type, f16_weights, summary}, ms}
  webgpuWhy: "", // why there is none
  artifactBytes: 0,
  loadMs: null,
  buildMs: null,
  info: null,
  scores: [], // finished scores: {bits_per_byte, total_bits, total_bytes, num_tokens, ms, chars}
  scoreEvents: [], // the running score's messages: {type, targets_done, targets_total, eta_s, at}
  genEvents: 0, // "gen-piece" messages of the running generation
  lastGeneration: null, // {prompt, text, ms, tokens, pieces, stopped}
  stops: [], // {task, ms}: from the click on Stop to the worker's answer
  evaluations: [], // finished evaluations: {plan, report, ms, progress_messages}
  loads: [], // models loaded: {name, source, bytes, demo, ms, progress_messages}
  loadNote: "", // the last load's refusal (the page keeps its model)
  evalEvents: 0, // "eval-progress" messages of the running evaluation
  busy: null, // "load" | "score" | "generate" | "evaluate" | null
});

// The model's worker; replaced by a fresh one (which loads the same model again) when an
// evaluation, which runs in one call, is stopped.
let worker = null;
function startWorker() {
  worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = ({ data }) => {
    const h = handlers[data.type];
    if (h) h(data);
    else console.error("unknown message from the worker", data);
  };
  worker.onerror = (e) => fail(`the worker failed: ${e.message || "(no message: see the console)"}`);
}
let lastText = ""; // the text of the score shown
let lastScore = null;
let stopClickedAt = null;
let genPrompt = "";
const alternatives = new Map(); // token index -> [{piece, prob}] of the score shown

function setStatus(text, kind = "info") {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function fail(message) {
  console.error(message);
  state.error = message;
  setStatus("Error: " + message, "error");
}

function setBusy(task) {
  state.busy = task;
  const idle = task === null;
  $("score-btn").disabled = !idle;
  $("gen-btn").disabled = !idle;
  $("ev-btn").disabled = !idle;
  $("ev-stop").disabled = task !== "evaluate";
  for (const id of ["model-url-btn", "model-file", "model-default-btn"]) $(id).disabled = !idle;
  $("score-stop").disabled = task !== "score";
  $("gen-stop").disabled = task !== "generate";
}

// A number field's value, checked against its own min, max and step (integers where the step
// is 1): a RangeError naming the field and its range otherwise, never a silent clamp.
function field(id, name) {
  const el = $(id);
  const v = Number(el.value);
  const lo = el.min === "" ? -Infinity : Number(el.min);
  const hi = el.max === "" ? Infinity : Number(el.max);
  const integer = el.step === "" || el.step === "1";
  if (el.value.trim() === "" || !Number.isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v))) {
    const range = `${integer ? "an integer" : "a number"} from ${el.min || "-∞"} to ${el.max || "∞"}`;
    throw new RangeError(`${name} must be ${range} (got "${el.value}")`);
  }
  return v;
}

const seconds = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`);

const byteFallbackNote = (n, what) =>
  n > 0
    ? `${fmt(n)} ${what} token${n === 1 ? " is a raw byte" : "s are raw bytes"}: the vocabulary has no ` +
      "piece for some characters, so the model sees their UTF-8 bytes one token each (and predicts them poorly)."
    : "";

// ---- scoring ----

function score() {
  const text = $("text").value;
  if (text.trim().length === 0) {
    $("score-ms").textContent = "nothing to score: the text is empty";
    return;
  }
  state.scoreEvents = [];
  $("score-note").textContent = "";
  $("score-eta").textContent = "tokenizing…";
  $("score-progress").value = 0;
  setBusy("score");
  lastText = text;
  worker.postMessage({ type: "score", text, on: $("score-on").value });
}

function onScoreStart(m) {
  const eta = m.eta_s === null ? "" : `, estimated ${seconds(m.eta_s)}`;
  $("score-eta").textContent = `${fmt(m.targets_total)} tokens in ${fmt(m.windows_total)} window(s)${eta}`;
  $("score-note").textContent = byteFallbackNote(m.byte_fallback_tokens, "of the text's");
  state.scoreEvents.push({ ...m, at: performance.now() });
}

function onScoreProgress(m) {
  state.scoreEvents.push({ ...m, at: performance.now() });
  // Windows done, and the layers of the one in flight (a large model's window takes seconds).
  $("score-progress").value = (m.windows_done + m.pass_layers_done / m.layers) / m.windows_total;
  if (m.windows_done < m.windows_total) {
    const eta = m.eta_s === null ? "" : ` · about ${seconds(m.eta_s)} left`;
    const bpb = Number.isFinite(m.bits_per_byte) ? `${m.bits_per_byte.toFixed(4)} bits per byte so far` : "first window";
    const rate = m.targets_done > 0 ? ` · ${fmt(Math.round(m.targets_per_s))} tokens/s` : "";
    $("score-eta").textContent = `${fmt(m.targets_done)} / ${fmt(m.targets_total)} tokens · ${bpb}${rate}${eta}`;
  }
}

function onScoreDone({ result: s, ms, on }) {
  state.path = on === "webgpu" ? "webgpu" : "wasm-cpu";
  lastScore = s;
  alternatives.clear();
  renderTokens($("tokens"), lastText, s);
  $("bpb").textContent = s.bits_per_byte.toFixed(4);
  $("bpb").dataset.bpb = String(s.bits_per_byte);
  $("ntokens").textContent = fmt(s.num_tokens);
  $("nbytes").textContent = fmt(s.total_bytes);
  $("score-ms").textContent = `${ms.toFixed(0)} ms (${on === "webgpu" ? "WebGPU" : "CPU"})`;
  $("score-ms").dataset.ms = String(ms);
  $("score-eta").textContent = "";
  $("score-progress").value = 1;
  state.scores.push({
    bits_per_byte: s.bits_per_byte,
    total_bits: s.total_bits,
    total_bytes: s.total_bytes,
    num_tokens: s.num_tokens,
    ms,
    chars: lastText.length,
    on,
  });
  setBusy(null);
  state.ready = true;
}

function onScoreStopped(m) {
  noteStop("score");
  $("score-eta").textContent =
    `stopped at ${fmt(m.targets_done)} / ${fmt(m.targets_total)} tokens ` +
    `(${m.bits_per_byte.toFixed(4)} bits per byte so far)`;
  setBusy(null);
}

// ---- the hover card ----

function showCard(span) {
  const i = Number(span.dataset.i);
  const t = lastScore && lastScore.tokens[i];
  if (!t) return;
  const card = $("hovercard");
  card.dataset.i = String(i);
  card.textContent = describe(t, alternatives.has(i) ? alternatives.get(i) : null);
  const r = span.getBoundingClientRect();
  card.style.left = `${window.scrollX + r.left}px`;
  card.style.top = `${window.scrollY + r.bottom + 4}px`;
  card.hidden = false;
  if (!alternatives.has(i) && state.busy === null) worker.postMessage({ type: "alternatives", target: i, k: 3 });
}

function onAlternatives({ target, list }) {
  alternatives.set(target, list);
  const card = $("hovercard");
  if (!card.hidden && card.dataset.i === String(target)) card.textContent = describe(lastScore.tokens[target], list);
}

// ---- generation ----

function generate() {
  const prompt = $("prompt").value;
  let n, temperature, topK, seed;
  try {
    n = field("gen-n", "tokens");
    temperature = field("gen-temp", "temperature");
    topK = field("gen-topk", "top-k");
    seed = field("gen-seed", "seed");
  } catch (e) {
    $("gen-ms").textContent = e.message;
    return;
  }
  if (prompt.trim().length === 0) {
    $("gen-ms").textContent = "nothing to continue: the prompt is empty";
    return;
  }
  genPrompt = prompt;
  state.genEvents = 0;
  $("gen-prompt").textContent = prompt;
  $("gen-out").textContent = "";
  $("gen-note").textContent = "";
  $("gen-ms").textContent = "generating…";
  setBusy("generate");
  worker.postMessage({ type: "generate", prompt, n, temperature, topK, seed });
}

function onGenPiece({ text, generated, ms }) {
  state.genEvents += 1;
  $("gen-out").textContent += text;
  $("gen-ms").textContent = `${generated} tokens · ${((1000 * generated) / ms).toFixed(0)} tokens/s`;
}

function onGenDone({ text, tokens, ms, stopped }) {
  if (stopped) noteStop("generate");
  $("gen-out").textContent = text;
  const rate = `${((1000 * tokens) / ms).toFixed(0)} tokens/s`;
  $("gen-ms").textContent = `${stopped ? "stopped after " : ""}${tokens} tokens in ${ms.toFixed(0)} ms (${rate})`;
  state.lastGeneration = { prompt: genPrompt, text, ms, tokens, pieces: state.genEvents, stopped };
  setBusy(null);
}

// ---- evaluation (windows, TTT, mixer, audit) ----

// The plan of the evaluation fields (WasmModel.evaluate's object; the CLI flags of the same names).
function evalPlan() {
  const plan = { seq_len: Number($("ev-seq").value), batch: 8 };
  if ($("ev-stride").value !== "") plan.stride = Number($("ev-stride").value);
  const adapt = $("ev-adapt").value;
  if (adapt === "lora") plan.ttt = "lora";
  else if (adapt !== "none") plan.recipe = adapt;
  if (adapt !== "none") plan.ttt_chunk = field("ev-chunk", "chunk");
  if ($("ev-mix").checked) plan.mix = "hedge";
  if ($("ev-audit").checked) plan.audit = true;
  return plan;
}

function evaluate() {
  const text = $("text").value;
  let plan;
  try {
    plan = evalPlan();
  } catch (e) {
    $("ev-status").textContent = e.message;
    return;
  }
  if (text.trim().length === 0) {
    $("ev-status").textContent = "nothing to evaluate: the text is empty";
    return;
  }
  startEvaluation(text, plan);
}

function startEvaluation(text, plan) {
  state.evalEvents = 0;
  $("ev-result").textContent = "";
  $("ev-progress").value = 0;
  $("ev-status").textContent = plan.audit ? "auditing, then evaluating…" : "evaluating…";
  setBusy("evaluate");
  worker.postMessage({ type: "evaluate", text, plan });
}

function onEvalProgress({ done, total, unit, bits_per_byte }) {
  state.evalEvents += 1;
  $("ev-progress").value = total > 0 ? done / total : 0;
  const bpb = Number.isFinite(bits_per_byte) ? ` · ${bits_per_byte.toFixed(4)} bits per byte so far` : "";
  $("ev-status").textContent = `${fmt(done)} / ${fmt(total)} ${unit}${bpb}`;
}

function onEvalDone({ plan, report, ms }) {
  state.evaluations.push({ plan, report, ms, progress_messages: state.evalEvents });
  $("ev-progress").value = 1;
  $("ev-status").textContent = `done in ${seconds(ms / 1000)}`;
  const out = $("ev-result");
  out.textContent = "";
  const line = (text, cls) => {
    const p = document.createElement("p");
    p.textContent = text;
    if (cls) p.className = cls;
    out.append(p);
    return p;
  };
  const how = report.adapt === "none" ? "no adaptation" : `${report.adapt} TTT`;
  line(
    `${report.val_bpb.toFixed(5)} bits per byte (${report.val_loss.toFixed(5)} nats per token) over ` +
      `${fmt(report.tokens)} tokens, ${fmt(report.bytes)} bytes · ${how}${report.mix ? " + Hedge mixer" : ""}`,
    "ev-main",
  ).id = "ev-bpb";
  if (report.mix) {
    const experts = report.mix.experts
      .filter((e) => e.enabled)
      .map((e) => `${e.name} ${e.val_bpb.toFixed(4)} (weight ${e.final_weight.toFixed(2)})`);
    line(`the model alone: ${report.mix.neural_val_bpb.toFixed(5)} · experts: ${experts.join(", ")}`);
  }
  if (report.audit) {
    const failed = report.audit.checks.filter((c) => !c.passed).map((c) => c.name);
    line(
      report.audit.passed
        ? `legality audit passed (${report.audit.checks.map((c) => c.name).join(", ")})`
        : `legality audit FAILED: ${failed.join(", ")}`,
      report.audit.passed ? "ev-pass" : "ev-fail",
    ).id = "ev-audit-result";
  }
  setBusy(null);
}

// An evaluation runs in one call in the worker, which cannot look at its messages meanwhile:
// Stop ends that worker and starts a fresh one with the same model (from the cache or the
// file it came from), without scoring the text again.
function stopEvaluation() {
  if (state.busy !== "evaluate") return;
  const clicked = performance.now();
  worker.terminate();
  state.stops.push({ task: "evaluate", ms: performance.now() - clicked });
  $("ev-status").textContent = "stopped; loading the model again…";
  startWorker();
  setBusy(null);
  const { artifact, name, cache, demo } = state.lastLoad;
  loadModel(artifact, { name, cache, demo }, false);
}

// ---- stop ----

function stop() {
  stopClickedAt = performance.now();
  worker.postMessage({ type: "stop" });
}

function noteStop(task) {
  if (stopClickedAt !== null) state.stops.push({ task, ms: performance.now() - stopClickedAt });
  stopClickedAt = null;
}

// ---- loading ----

let loadProgress = 0; // "load-progress" messages of the running load
let rescoreAfterLoad = true; // score the text again once the model is loaded

// Loads `artifact` (a URL, or a File picked or dropped) in the worker, with the page's
// tokenizer; `cache` keeps a URL's download in the Cache API.
function loadModel(artifact, { name, cache = false, demo = false }, rescore = true) {
  if (state.busy !== null) {
    $("model-note").textContent = `cannot load ${name} now: stop the running ${state.busy} first`;
    return;
  }
  state.t0 = performance.now();
  loadProgress = 0;
  $("model-note").textContent = "";
  $("model-progress").hidden = false;
  $("model-progress").removeAttribute("value");
  $("model-progress-text").textContent = `loading ${name}…`;
  setBusy("load");
  state.lastLoad = { artifact, name, cache, demo };
  rescoreAfterLoad = rescore;
  const webgpu = new URLSearchParams(location.search).get("compute") !== "cpu";
  worker.postMessage({ type: "load", artifact, tokenizer: "tokenizer.model", cache, name, demo, webgpu });
}

function onLoadProgress({ received, total }) {
  loadProgress += 1;
  const mb = (n) => (n / 1e6).toFixed(1);
  if (total) $("model-progress").value = received / total;
  $("model-progress-text").textContent = `downloading ${mb(received)}${total ? ` / ${mb(total)}` : ""} MB`;
}

function loadUrl() {
  const url = $("model-url").value.trim();
  if (url === "") {
    $("model-note").textContent = "give the URL of a challenge artifact (.ptz) first";
    return;
  }
  let absolute;
  try {
    absolute = new URL(url, location.href).href;
  } catch {
    $("model-note").textContent = `not a URL: "${url}"`;
    return;
  }
  loadModel(absolute, { name: absolute, cache: true });
}

function loadFile(file) {
  if (file) loadModel(file, { name: file.name });
}

function loadDefault() {
  loadModel("model.ptz", { name: state.defaultModel.name, demo: state.defaultModel.demo });
}

const SOURCES = {
  network: "downloaded",
  cache: "from this browser's cache",
  file: "from a file",
};

// Where scores run, chosen when a model loads: WebGPU when the browser gave the model a
// hardware adapter; WebAssembly on the CPU when it has none, or only a software one (SwiftShader
// emulates a GPU on the CPU, far slower than the WebAssembly path: it stays selectable). The
// "on" menu beside Score overrides the choice; generation and evaluation always run on the CPU.
function showCompute(webgpu, why) {
  state.webgpu = webgpu;
  state.webgpuWhy = why;
  const sel = $("score-on");
  sel.querySelector('option[value="webgpu"]').disabled = webgpu === null;
  sel.value = webgpu && webgpu.preferred ? "webgpu" : "cpu";
  sel.disabled = webgpu === null;
  const cpu = "WebAssembly (CPU, SIMD)";
  if (webgpu) {
    const a = webgpu.adapter;
    const adapter = `${a.name || "unnamed adapter"}, ${a.f16_weights ? "f16" : "f32"} weights`;
    $("path").textContent = webgpu.preferred
      ? `scoring on WebGPU (${adapter}); generation and evaluation on ${cpu}; in a Web Worker`
      : `${cpu}, in a Web Worker; the browser's WebGPU has only a software adapter (${adapter}), ` +
        "slower than the CPU path here: pick it beside Score to compare";
    $("path").title = a.summary;
  } else {
    $("path").textContent = `${cpu}, in a Web Worker (no WebGPU: ${why})`;
    $("path").title = `no WebGPU path: ${why}`;
  }
}

function onLoaded({ info, artifactBytes, fetchMs, buildMs, source, cacheMissing, name, demo, webgpu, webgpuWhy }) {
  const first = state.info === null;
  state.info = info;
  state.artifactBytes = artifactBytes;
  state.loadMs = performance.now() - state.t0;
  state.buildMs = buildMs;
  state.loads.push({ name, source, bytes: artifactBytes, demo, ms: state.loadMs, progress_messages: loadProgress });
  $("model-progress").hidden = true;
  $("model-progress-text").textContent = "";
  $("model-name").textContent = name;
  $("model-source").textContent = name === state.defaultModel.name && source === "network" ? "(the page's)" : `(${SOURCES[source]})`;
  $("model-note").textContent =
    (demo
      ? `This is pgolf-rt's tiny demo model (${info.num_layers} layers, ${(info.param_count / 1e6).toFixed(1)} M ` +
        "parameters, trained for minutes): its scores and text are far from a challenge model's. " +
        "Load a challenge artifact to try a real one."
      : "") + (cacheMissing ? " This browser offers no Cache API here: the download is not kept." : "");
  $("artifact-size").textContent = `${fmt(artifactBytes)} bytes (${(artifactBytes / 1e6).toFixed(2)} MB)`;
  $("load-time").textContent =
    `${(state.loadMs / 1000).toFixed(2)} s (download ${(fetchMs / 1000).toFixed(2)} s, ` +
    `decode ${(buildMs / 1000).toFixed(2)} s)`;
  $("param-count").textContent = fmt(info.param_count);
  $("arch").textContent =
    `${info.num_layers} layers, d=${info.model_dim}, ${info.num_heads} heads / ${info.num_kv_heads} KV, ` +
    `MLP ${info.mlp_hidden}, vocab ${info.vocab_size}${info.tied_embeddings ? ", tied" : ""}, context ${info.context}`;
  $("arch").title = info.summary;
  showCompute(webgpu, webgpuWhy);
  $("footer-model").textContent =
    `a ${info.num_layers}-layer GPT of ${fmt(info.param_count)} parameters (d=${info.model_dim}, ` +
    `${(artifactBytes / 1e6).toFixed(2)} MB artifact)`;
  for (const id of ["text", "prompt"]) $(id).disabled = false;
  setBusy(null);
  setStatus("Ready.", "ready");
  if (first && state.sample) $("text").value = state.sample;
  // The page's first score is the ~1 KB sample text (then the page is ready); after another
  // load, the text shown is scored again by the new model.
  if (rescoreAfterLoad && $("text").value.trim().length > 0) score();
  else state.ready = true;
}

function onError({ task, message }) {
  if (task === "load" && state.ready) {
    // A later load that failed: the worker kept the model it had.
    state.loadNote = message;
    $("model-progress").hidden = true;
    $("model-progress-text").textContent = "";
    $("model-note").textContent = `Could not load that model: ${message}. Still using ${$("model-name").textContent}.`;
    return setBusy(null);
  }
  if (task === "load" || !state.ready) return fail(message);
  if (task === "generate") $("gen-ms").textContent = message;
  else if (task === "score") $("score-eta").textContent = message;
  else if (task === "evaluate") $("ev-status").textContent = message;
  else console.error(`${task}: ${message}`);
  if (task === state.busy) setBusy(null);
}

const handlers = {
  "load-progress": onLoadProgress,
  loaded: onLoaded,
  "score-start": onScoreStart,
  "score-progress": onScoreProgress,
  "score-done": onScoreDone,
  "score-stopped": onScoreStopped,
  "gen-start": (m) => ($("gen-note").textContent = byteFallbackNote(m.byte_fallback_tokens, "of the prompt's")),
  "gen-piece": onGenPiece,
  "gen-done": onGenDone,
  alternatives: onAlternatives,
  "eval-progress": onEvalProgress,
  "eval-done": onEvalDone,
  "check-chunked": (m) => state.onCheck && state.onCheck(m),
  error: onError,
};

startWorker();

// Test hook: scores the text box's text on "webgpu" or "cpu".
state.scoreOn = (on) => {
  $("score-on").value = on;
  score();
};

// Test hook: evaluates the text box's text with any plan object (the worker checks it).
state.evaluateWith = (plan) => startEvaluation($("text").value, plan);

// Test hook: scores `text` in the worker both window by window and in one call.
state.checkChunked = (text) =>
  new Promise((resolve) => {
    state.onCheck = resolve;
    worker.postMessage({ type: "check-chunked", text });
  });

async function main() {
  drawLegend($("legend"));
  state.t0 = performance.now();
  const res = await fetch("fixed_text.txt");
  state.sample = res.ok ? await res.text() : "";
  // model.json (from prepare.sh): the default artifact's name and whether it is the tiny demo.
  const meta = await fetch("model.json").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  state.defaultModel = { name: (meta && meta.name) || "model.ptz", demo: Boolean(meta && meta.demo) };
  setStatus("Downloading and preparing the model (in a Web Worker)…");
  loadDefault();
}

$("score-btn").addEventListener("click", score);
$("gen-btn").addEventListener("click", generate);
$("ev-btn").addEventListener("click", evaluate);
$("ev-stop").addEventListener("click", stopEvaluation);
$("model-url-btn").addEventListener("click", loadUrl);
$("model-url").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && state.busy === null) loadUrl();
});
$("model-file").addEventListener("change", (e) => loadFile(e.target.files[0]));
$("model-default-btn").addEventListener("click", loadDefault);
// An artifact dropped anywhere on the page is loaded (a dropped text file is not a model:
// the worker's refusal says so and the page keeps its model).
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  if (state.info === null) return;
  loadFile(e.dataTransfer && e.dataTransfer.files[0]);
});
$("score-stop").addEventListener("click", stop);
$("gen-stop").addEventListener("click", stop);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && state.busy === null) score();
});
$("tokens").addEventListener("mouseover", (e) => {
  if (e.target.classList.contains("tok")) showCard(e.target);
});
$("tokens").addEventListener("mouseleave", () => ($("hovercard").hidden = true));
main().catch((e) => fail(String(e && e.message ? e.message : e)));
