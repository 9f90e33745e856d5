// pgolf-rt browser demo: plain ES module, no bundler. Loads the wasm-bindgen package from ./pkg,
// then model.ptz and tokenizer.model from this folder.
import init, { WasmModel } from "./pkg/pgolf_rt_wasm.js";

const $ = (id) => document.getElementById(id);
const MAX_BITS = 16; // colour scale: 0 bits green ... MAX_BITS and more red

// State read by scripts/browser-test.sh (and handy in the console).
const state = (window.pgolf = {
  ready: false,
  error: null,
  artifactBytes: 0,
  loadMs: null,
  scores: [], // {bits_per_byte, total_bits, total_bytes, num_tokens, ms, chars}
  model: null,
});

function setStatus(text, kind = "info") {
  $("status").textContent = text;
  $("status").dataset.state = kind;
}

function fail(err) {
  console.error(err);
  state.error = String(err && err.message ? err.message : err);
  setStatus("Error: " + state.error, "error");
}

const nextFrame = () => new Promise((r) => setTimeout(r, 0));

async function fetchBytes(url) {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`fetching ${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

function colour(bits) {
  const t = Math.min(Math.max(bits / MAX_BITS, 0), 1);
  const hue = 120 * (1 - t); // 120 green -> 0 red
  return `hsl(${hue.toFixed(0)}, 85%, ${(88 - 18 * t).toFixed(0)}%)`;
}

function drawLegend() {
  const el = $("legend");
  el.append("0 bits");
  for (let b = 0; b <= MAX_BITS; b += 2) {
    const s = document.createElement("span");
    s.className = "swatch";
    s.style.background = colour(b);
    s.title = `${b} bits`;
    el.append(s);
  }
  el.append(`${MAX_BITS}+ bits`);
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

function score() {
  const text = $("text").value;
  if (text.length === 0) {
    $("score-ms").textContent = "nothing to score: the text is empty";
    $("tokens").replaceChildren();
    return;
  }
  const t0 = performance.now();
  let s;
  try {
    s = state.model.score(text);
  } catch (e) {
    fail(e);
    return;
  }
  const ms = performance.now() - t0;
  const frag = document.createDocumentFragment();
  for (const t of s.tokens) {
    const span = document.createElement("span");
    span.textContent = t.piece;
    span.style.background = colour(t.bits);
    span.title = `id ${t.id}  ${JSON.stringify(t.piece)}\n${t.bits.toFixed(2)} bits (logprob ${t.logprob.toFixed(4)} nats)\n${t.bytes} byte(s)`;
    frag.append(span);
  }
  $("tokens").replaceChildren(frag);
  $("bpb").textContent = Number.isFinite(s.bits_per_byte) ? s.bits_per_byte.toFixed(4) : "–";
  $("bpb").dataset.bpb = String(s.bits_per_byte);
  $("ntokens").textContent = s.num_tokens;
  $("nbytes").textContent = s.total_bytes;
  $("score-ms").textContent = `${ms.toFixed(0)} ms`;
  $("score-ms").dataset.ms = String(ms);
  state.scores.push({
    bits_per_byte: s.bits_per_byte,
    total_bits: s.total_bits,
    total_bytes: s.total_bytes,
    num_tokens: s.num_tokens,
    ms,
    chars: text.length,
  });
}

async function generate() {
  const prompt = $("prompt").value;
  let n, temp, topk, seed;
  try {
    n = field("gen-n", "tokens");
    temp = field("gen-temp", "temperature");
    topk = field("gen-topk", "top-k");
    seed = BigInt(field("gen-seed", "seed"));
  } catch (e) {
    $("gen-ms").textContent = e.message;
    return;
  }
  $("gen-btn").disabled = true;
  $("gen-ms").textContent = "generating…";
  await nextFrame();
  try {
    const t0 = performance.now();
    const out = state.model.generate(prompt, n, temp, topk, seed);
    const ms = performance.now() - t0;
    $("gen-prompt").textContent = prompt;
    $("gen-out").textContent = out;
    $("gen-ms").textContent = `${n} tokens in ${ms.toFixed(0)} ms`;
    state.lastGeneration = { prompt, text: out, ms };
  } catch (e) {
    fail(e);
  } finally {
    $("gen-btn").disabled = false;
  }
}

async function main() {
  drawLegend();
  const t0 = performance.now();
  await init();
  setStatus("Downloading the model…");
  const [artifact, tokenizer, sample] = await Promise.all([
    fetchBytes("model.ptz"),
    fetchBytes("tokenizer.model"),
    fetch("fixed_text.txt").then((r) => (r.ok ? r.text() : "")),
  ]);
  const tFetched = performance.now();
  state.artifactBytes = artifact.length;
  $("artifact-size").textContent =
    `${artifact.length.toLocaleString("en-US")} bytes (${(artifact.length / 1e6).toFixed(2)} MB)`;
  setStatus("Decompressing and dequantizing…");
  await nextFrame();
  const tBuild = performance.now();
  state.model = new WasmModel(artifact, tokenizer);
  const tReady = performance.now();
  state.loadMs = tReady - t0;
  state.buildMs = tReady - tBuild;
  $("load-time").textContent =
    `${(state.loadMs / 1000).toFixed(2)} s (download ${((tFetched - t0) / 1000).toFixed(2)} s, ` +
    `decode ${(state.buildMs / 1000).toFixed(2)} s)`;
  const info = state.model.info();
  state.info = info;
  $("param-count").textContent = info.param_count.toLocaleString("en-US");
  $("arch").textContent =
    `${info.num_layers} layers, d=${info.model_dim}, ${info.num_heads} heads / ${info.num_kv_heads} KV, ` +
    `MLP ${info.mlp_hidden}, vocab ${info.vocab_size}${info.tied_embeddings ? ", tied" : ""}`;
  $("arch").title = info.summary;
  $("footer-model").textContent =
    `${info.num_layers}-layer GPT (${info.param_count.toLocaleString("en-US")} parameters)`;
  for (const id of ["text", "prompt", "score-btn", "gen-btn"]) $(id).disabled = false;
  $("text").value = sample;
  setStatus("Ready.", "ready");
  await nextFrame();
  if (sample) score(); // the page's first score: the ~1 KB sample text
  state.ready = true;
}

$("score-btn").addEventListener("click", score);
$("gen-btn").addEventListener("click", generate);
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) score();
});
main().catch(fail);
