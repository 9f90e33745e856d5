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
  path: "wasm-cpu", // where the model runs: WebAssembly on the CPU, in a worker
  artifactBytes: 0,
  loadMs: null,
  buildMs: null,
  info: null,
  scores: [], // finished scores: {bits_per_byte, total_bits, total_bytes, num_tokens, ms, chars}
  scoreEvents: [], // the running score's messages: {type, targets_done, targets_total, eta_s, at}
  genEvents: 0, // "gen-piece" messages of the running generation
  lastGeneration: null, // {prompt, text, ms, tokens, pieces, stopped}
  stops: [], // {task, ms}: from the click on Stop to the worker's answer
  busy: null, // "score" | "generate" | null
});

const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
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
  worker.postMessage({ type: "score", text });
}

function onScoreStart(m) {
  const eta = m.eta_s === null ? "" : `, estimated ${seconds(m.eta_s)}`;
  $("score-eta").textContent = `${fmt(m.targets_total)} tokens in ${fmt(m.windows_total)} window(s)${eta}`;
  $("score-note").textContent = byteFallbackNote(m.byte_fallback_tokens, "of the text's");
  state.scoreEvents.push({ ...m, at: performance.now() });
}

function onScoreProgress(m) {
  state.scoreEvents.push({ ...m, at: performance.now() });
  $("score-progress").value = m.targets_done / m.targets_total;
  if (m.windows_done < m.windows_total) {
    const eta = m.eta_s === null ? "" : ` · about ${seconds(m.eta_s)} left`;
    $("score-eta").textContent =
      `${fmt(m.targets_done)} / ${fmt(m.targets_total)} tokens · ${m.bits_per_byte.toFixed(4)} bits per byte so far · ` +
      `${fmt(Math.round(m.targets_per_s))} tokens/s${eta}`;
  }
}

function onScoreDone({ result: s, ms }) {
  lastScore = s;
  alternatives.clear();
  renderTokens($("tokens"), lastText, s);
  $("bpb").textContent = s.bits_per_byte.toFixed(4);
  $("bpb").dataset.bpb = String(s.bits_per_byte);
  $("ntokens").textContent = fmt(s.num_tokens);
  $("nbytes").textContent = fmt(s.total_bytes);
  $("score-ms").textContent = `${ms.toFixed(0)} ms`;
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

function onLoaded({ info, artifactBytes, fetchMs, buildMs }) {
  state.info = info;
  state.artifactBytes = artifactBytes;
  state.loadMs = performance.now() - state.t0;
  state.buildMs = buildMs;
  $("artifact-size").textContent = `${fmt(artifactBytes)} bytes (${(artifactBytes / 1e6).toFixed(2)} MB)`;
  $("load-time").textContent =
    `${(state.loadMs / 1000).toFixed(2)} s (download ${(fetchMs / 1000).toFixed(2)} s, ` +
    `decode ${(buildMs / 1000).toFixed(2)} s)`;
  $("param-count").textContent = fmt(info.param_count);
  $("arch").textContent =
    `${info.num_layers} layers, d=${info.model_dim}, ${info.num_heads} heads / ${info.num_kv_heads} KV, ` +
    `MLP ${info.mlp_hidden}, vocab ${info.vocab_size}${info.tied_embeddings ? ", tied" : ""}, context ${info.context}`;
  $("arch").title = info.summary;
  $("path").textContent = "WebAssembly (CPU, SIMD), in a Web Worker";
  $("footer-model").textContent =
    `a ${info.num_layers}-layer GPT of ${fmt(info.param_count)} parameters (d=${info.model_dim}, ` +
    `${(artifactBytes / 1e6).toFixed(2)} MB artifact)`;
  for (const id of ["text", "prompt"]) $(id).disabled = false;
  setBusy(null);
  setStatus("Ready.", "ready");
  if (state.sample) {
    $("text").value = state.sample;
    score(); // the page's first score: the ~1 KB sample text (then the page is ready)
  } else state.ready = true;
}

function onError({ task, message }) {
  if (task === "load" || !state.ready) return fail(message);
  if (task === "generate") $("gen-ms").textContent = message;
  else if (task === "score") $("score-eta").textContent = message;
  else console.error(`${task}: ${message}`);
  if (task === state.busy) setBusy(null);
}

const handlers = {
  loaded: onLoaded,
  "score-start": onScoreStart,
  "score-progress": onScoreProgress,
  "score-done": onScoreDone,
  "score-stopped": onScoreStopped,
  "gen-start": (m) => ($("gen-note").textContent = byteFallbackNote(m.byte_fallback_tokens, "of the prompt's")),
  "gen-piece": onGenPiece,
  "gen-done": onGenDone,
  alternatives: onAlternatives,
  "check-chunked": (m) => state.onCheck && state.onCheck(m),
  error: onError,
};

worker.onmessage = ({ data }) => {
  const h = handlers[data.type];
  if (h) h(data);
  else console.error("unknown message from the worker", data);
};
worker.onerror = (e) => fail(`the worker failed: ${e.message || "(no message: see the console)"}`);

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
  setStatus("Downloading and preparing the model (in a Web Worker)…");
  worker.postMessage({ type: "load", artifact: "model.ptz", tokenizer: "tokenizer.model" });
}

$("score-btn").addEventListener("click", score);
$("gen-btn").addEventListener("click", generate);
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
