#!/usr/bin/env bash
# Browser test of the WASM build (issues 6 and 18): builds bindings/wasm (release) and its JS
# glue, serves examples/web on 127.0.0.1, loads the default model in Debian's headless Chromium
# (the model runs in the page's Web Worker, on the WebAssembly CPU path, and on WebGPU where the
# browser offers it), and checks
#   * the page's bits per byte of examples/web/fixed_text.txt equals native `pgolf-rt score`
#     within 1e-4, and the coloured view keeps the text's characters (newlines included),
#   * the page's first score of that ~1 KB text takes under 2 s (performance.now() in the page),
#   * the worker's window-by-window score of a several-window text equals its one-call score,
#     every token's log-probability bit for bit,
#   * the page's evaluation of that text (windows of 128, stride 64, #461's full TTT in chunks
#     of 128, the Hedge mixer, the legality audit) equals native `pgolf-rt eval --text` within
#     1e-4 bits per byte, the mixture's and the model's alone, and its audit passes; a long
#     evaluation stops within $MAX_STOP_MS and the page loads its model again,
#   * out-of-range fields and an empty prompt are refused, text split into byte-fallback tokens
#     gets a note; a greedy continuation comes back
#     non-empty, streamed (a message per token); a hover card shows the top guesses,
#   * the page says whether its model is the tiny demo; the same artifact loaded by URL (with
#     download progress, then from the Cache API), picked as a file, and dropped on the page
#     scores the sample the same, bit for bit; a text file is refused and the page keeps its model,
#   * a 1000-token generation and a ~100 KB score (which shows progress and an estimated time)
#     stop within $MAX_STOP_MS of the click on Stop, and a 50 ms main-thread timer never waits
#     more than $MAX_TICK_GAP_MS during the long score,
#   * where the browser offers WebGPU (Chromium's software adapter, SwiftShader, unless
#     BROWSER_WEBGPU says otherwise), the sample scored on WebGPU equals native within 1e-4 too, the
#     page picks the CPU path by default for a software adapter, a WebGPU score's hover card shows
#     top guesses, and a long WebGPU score stops within $MAX_STOP_MS; the output says which paths
#     ran and how long the sample took on each,
# and saves a screenshot to $SCREENSHOT (default ${CARGO_TARGET_DIR:-target}/browser-test/screenshot.png).
# Installs what it needs (apt chromium + chromium-driver, rustup target wasm32-unknown-unknown,
# wasm-bindgen-cli matching Cargo.lock, playwright-core into scripts/browser/node_modules); each
# step is skipped when already done. The model is the committed default (models/); set
# PGOLF_ARTIFACT / PGOLF_TOKENIZER to test another.
# Env: PGOLF_ARTIFACT, PGOLF_TOKENIZER, SCREENSHOT, MAX_FIRST_SCORE_MS (2000), BPB_TOLERANCE (1e-4),
# MAX_STOP_MS (500), MAX_TICK_GAP_MS (250), TIMEOUT_S (300), CARGO_TARGET_DIR (target),
# BROWSER_WEBGPU (swiftshader | gpu | off), PGOLF_REQUIRE_WEBGPU=1 (no WebGPU adapter is a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

die() { echo "browser-test: FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

artifact="${PGOLF_ARTIFACT:-$root/models/pg-tiny-4L128.int8.ptz}"
tokenizer="${PGOLF_TOKENIZER:-$root/models/pg_sp1024_bpe.model}"
for f in "$artifact" "$tokenizer"; do
  [ -f "$f" ] || die "$f is absent"
done
target_dir="${CARGO_TARGET_DIR:-$root/target}"
screenshot="${SCREENSHOT:-$target_dir/browser-test/screenshot.png}"
max_ms="${MAX_FIRST_SCORE_MS:-2000}"
max_stop_ms="${MAX_STOP_MS:-500}"
max_gap_ms="${MAX_TICK_GAP_MS:-250}"
tol="${BPB_TOLERANCE:-1e-4}"
timeout_s="${TIMEOUT_S:-300}"
text="$root/examples/web/fixed_text.txt"

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "tools"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "   apt-get install chromium chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  sudo_ apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { sudo_ apt-get update -q >/dev/null && sudo_ apt-get install -y -q chromium chromium-driver >/dev/null; } ||
    die "cannot install chromium and chromium-driver with apt-get"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "   apt-get install nodejs npm"
  sudo_ apt-get install -y -q nodejs npm >/dev/null || die "cannot install nodejs and npm with apt-get"
fi
chromium_bin="$(command -v chromium)"
echo "   $("$chromium_bin" --version 2>/dev/null | head -1), node $(node --version)"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  echo "   rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown || die "rustup target add wasm32-unknown-unknown"
fi

wb_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$wb_version" ] || die "no wasm-bindgen in Cargo.lock"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$wb_version" ]; then
  echo "   cargo install wasm-bindgen-cli --version $wb_version (a few minutes, once)"
  # --locked first; without it when the registry lacks a locked dependency version.
  cargo install -q wasm-bindgen-cli --version "=$wb_version" --locked ||
    cargo install -q wasm-bindgen-cli --version "=$wb_version" ||
    die "cannot install wasm-bindgen-cli $wb_version"
fi

pw_version="$(python3 -c 'import json; print(json.load(open("scripts/browser/package.json"))["dependencies"]["playwright-core"])')"
if [ "$(node -p 'require("./scripts/browser/node_modules/playwright-core/package.json").version' 2>/dev/null)" != "$pw_version" ]; then
  echo "   npm install playwright-core@$pw_version (scripts/browser/node_modules)"
  (cd scripts/browser && npm install --no-audit --no-fund --no-package-lock --loglevel=error) ||
    die "npm install in scripts/browser"
fi

step "build the wasm package and copy the default model beside the page"
PGOLF_ARTIFACT="$artifact" PGOLF_TOKENIZER="$tokenizer" examples/web/prepare.sh || die "examples/web/prepare.sh"

step "native score of $(basename "$text") (cargo run --release -- score --json)"
native_json="$(cargo run -q --release -p pgolf-rt -- score --json --artifact "$artifact" \
  --tokenizer "$tokenizer" <"$text" | tail -n 1)" || die "native pgolf-rt score"
native_bpb="$(python3 -c 'import json,sys; print(repr(json.loads(sys.argv[1])["bits_per_byte"]))' "$native_json")" ||
  die "cannot read bits_per_byte from the native JSON: $native_json"
echo "   native bits per byte: $native_bpb"

# The page's evaluation (test.mjs sets it: windows of 128, stride 64, #461's full TTT in chunks of
# 128, the Hedge mixer, the audit) run natively with the same plan.
step "native eval of $(basename "$text") (pgolf-rt eval --text, #461's TTT + mixer + audit)"
eval_json="$(cargo run -q --release -p pgolf-rt -- eval --json --artifact "$artifact" \
  --tokenizer "$tokenizer" --text "$text" --seq-len 128 --stride 64 --batch 8 --ttt-recipe pr461 \
  --ttt-chunk 128 --mix hedge --audit | tail -n 1)" || die "native pgolf-rt eval --text"
echo "   native eval: $(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); print(j["val_bpb"], "bits per byte, neural alone", j["mix"]["neural_val_bpb"], ", audit passed:", j["audit"]["passed"])' "$eval_json")" ||
  die "cannot read the native eval JSON: $eval_json"

step "serve examples/web on 127.0.0.1"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
python3 -m http.server --bind 127.0.0.1 --directory examples/web "$port" >/dev/null 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/index.html', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
echo "   http://127.0.0.1:$port/"

step "headless Chromium: load the model, score the fixed text, stream and stop generations and a long score"
result="$(CHROMIUM="$chromium_bin" node scripts/browser/test.mjs "http://127.0.0.1:$port/index.html" \
  "$screenshot" "$timeout_s")" || true
[ -n "$result" ] || die "the browser driver printed nothing"

demo=false
cmp -s "$artifact" "$root/models/pg-tiny-4L128.int8.ptz" && demo=true
python3 - "$result" "$native_bpb" "$tol" "$max_ms" "$screenshot" "$max_stop_ms" "$max_gap_ms" "$eval_json" "$demo" <<'PY'
import json, math, os, sys
res, native, tol, max_ms, shot = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
max_stop_ms, max_gap_ms = float(sys.argv[6]), float(sys.argv[7])
native_eval = json.loads(sys.argv[8])
demo = sys.argv[9] == "true"
for line in res.get("console", []):
    print("   console:", line)
fails = []
if not res.get("ok"):
    print(f"browser-test: FAILED: {res.get('error')}", file=sys.stderr)
    sys.exit(1)
first = res.get("firstScore")
if not first:
    fails.append("the page did not score the fixed text")
else:
    wasm = first["bits_per_byte"]
    diff = abs(wasm - native)
    print(f"   path of the last score: {res.get('path')}; the first score ran on {first.get('on')}")
    print(f"   artifact {res['artifactBytes']} bytes, loaded in {res['loadMs']:.0f} ms (decode {res['buildMs']:.0f} ms), {res['info']['param_count']} parameters")
    print(f"   first score: {first['num_tokens']} tokens, {first['total_bytes']} bytes, {first['chars']} chars in {first['ms']:.1f} ms")
    second = res.get("secondScore") or {}
    print(f"   second score of the same text (warm): {second.get('ms', float('nan')):.1f} ms, bits per byte {second.get('bits_per_byte')!r}")
    if second.get("bits_per_byte") != wasm:
        fails.append(f"scoring the same text twice gave {wasm!r} then {second.get('bits_per_byte')!r}")
    print(f"   bits per byte: wasm {wasm!r}  native {native!r}  |diff| {diff:.3e}")
    if not math.isfinite(wasm) or not diff < tol:
        fails.append(f"WASM bits per byte {wasm!r} differs from native {native!r} by {diff:.3e} (tolerance {tol})")
    if float(res.get("shownBpb") or "nan") != wasm:
        fails.append(f"the page shows {res.get('shownBpb')!r}, not the score's {wasm!r}")
    if res.get("tokenSpans") != first["num_tokens"]:
        fails.append(f"{res.get('tokenSpans')} coloured tokens for {first['num_tokens']} scored")
    if not first["ms"] < max_ms:
        fails.append(f"first score took {first['ms']:.0f} ms, over {max_ms:.0f} ms")
    if not res.get("keepsText"):
        fails.append("the coloured view's characters differ from the text's (whitespace or newlines lost)")
    print(f"   footer: {res.get('footer')}")
    if f"{res['info']['num_layers']}-layer" not in (res.get("footer") or ""):
        fails.append(f"the footer does not give the model's {res['info']['num_layers']} layers: {res.get('footer')!r}")
chunk = res.get("chunkCheck") or {}
print(f"   layer by layer (and window steps) vs one call ({chunk.get('num_tokens')} tokens): {chunk.get('chunked')!r} vs {chunk.get('whole')!r}, same token log-probs: {chunk.get('sameTokens')}")
if not (chunk.get("sameTokens") and chunk.get("chunked") == chunk.get("whole")):
    fails.append(f"the stepped score differs from the one-call score: {chunk}")
print(f"   {res.get('refusals')}")
gen = res.get("generation") or {}
print(f"   greedy continuation ({gen.get('ms', float('nan')):.0f} ms, {gen.get('pieces')} streamed messages): {gen.get('prompt', '')!r} + {gen.get('text')!r}")
if not gen.get("text"):
    fails.append(f"no continuation: {gen}")
if not (gen.get("pieces") or 0) >= 5:
    fails.append(f"the continuation was not streamed: {gen.get('pieces')} piece messages")
card = res.get("hoverCard") or ""
print("   hover card: " + " | ".join(card.splitlines()))
note = res.get("byteFallbackNote") or ""
print(f"   byte-fallback note: {note!r}")
if "raw byte" not in note:
    fails.append(f"no note for a text split into byte-fallback tokens: {note!r}")
ev = res.get("evaluation") or {}
rep = ev.get("report") or {}
if not rep:
    fails.append("the page did not evaluate the fixed text")
else:
    print(f"   evaluation ({ev.get('progress_messages')} progress messages, {ev.get('ms', float('nan')):.0f} ms): page shows {ev.get('shown')!r}; {ev.get('audit_shown')!r}")
    pairs = [("val_bpb", rep.get("val_bpb"), native_eval["val_bpb"]),
             ("the model alone", (rep.get("mix") or {}).get("neural_val_bpb"), native_eval["mix"]["neural_val_bpb"])]
    for name, w, n in pairs:
        d = abs(w - n) if isinstance(w, (int, float)) else float("nan")
        print(f"   evaluation {name}: wasm {w!r}  native {n!r}  |diff| {d:.3e}")
        if not d < tol:
            fails.append(f"the page's evaluation ({name}) {w!r} differs from native pgolf-rt eval {n!r} (tolerance {tol})")
    if rep.get("tokens") != native_eval["tokens"] or rep.get("bytes") != native_eval["bytes"]:
        fails.append(f"the page evaluated {rep.get('tokens')} tokens / {rep.get('bytes')} bytes, native {native_eval['tokens']} / {native_eval['bytes']}")
    if not (rep.get("audit") or {}).get("passed") or not native_eval["audit"]["passed"]:
        fails.append(f"the audit did not pass: page {rep.get('audit')}, native {native_eval['audit']}")
    if rep.get("adapt") != "full" or native_eval.get("mode") != "full-ttt":
        fails.append(f"the evaluation did not run full TTT: page {rep.get('adapt')!r}, native {native_eval.get('mode')!r}")
    if (ev.get("progress_messages") or 0) < 1:
        fails.append("the evaluation sent no progress")
    if ev.get("shown", "").split(" ")[0] != f"{rep['val_bpb']:.5f}":
        fails.append(f"the page shows {ev.get('shown')!r} for {rep['val_bpb']!r}")
es = res.get("evalStop") or {}
print(f"   long evaluation stopped after {es.get('progress')} progress messages, {(es.get('stop') or {}).get('ms', float('nan')):.0f} ms after the click; model loaded again ({(es.get('reload') or {}).get('source')}) in {(es.get('reload') or {}).get('ms', float('nan')):.0f} ms")
if (es.get("stop") or {}).get("task") != "evaluate" or not es["stop"]["ms"] < max_stop_ms:
    fails.append(f"the long evaluation did not stop within {max_stop_ms:.0f} ms: {es}")
if es.get("evaluations") != 1 or es.get("rescored") or not es.get("reload"):
    fails.append(f"after stopping an evaluation: expected no result, no rescore, the model loaded again: {es}")
lg = res.get("longGeneration") or {}
stop = lg.get("stop") or {}
print(f"   long generation: stopped after {lg.get('tokens')} of 1000 tokens ({lg.get('pieces')} streamed messages), {stop.get('ms', float('nan')):.0f} ms after the click on Stop")
if not (lg.get("stopped") and (lg.get("tokens") or 1000) < 1000 and stop.get("task") == "generate"):
    fails.append(f"the long generation did not stop: {lg}")
elif not stop["ms"] < max_stop_ms:
    fails.append(f"the long generation stopped {stop['ms']:.0f} ms after the click, over {max_stop_ms:.0f} ms")
ls = res.get("longScore") or {}
stop = ls.get("stop") or {}
eta = ls.get("eta_before_s")
print(f"   long score: {ls.get('chars')} chars, {ls.get('targets_total')} tokens in {ls.get('windows_total')} windows, estimated {eta if eta is None else round(eta, 1)} s before it ran")
print(f"   long score: {ls.get('progress_messages')} progress messages, stopped at {ls.get('targets_done')} tokens ({ls.get('partial_bpb')!r} bits per byte so far), {stop.get('ms', float('nan')):.0f} ms after the click on Stop")
print(f"   long score: page shows {ls.get('shown')!r}")
print(f"   main-thread 50 ms timer during the long score: {ls.get('ticks')} ticks, largest gap {ls.get('max_gap_ms', float('nan')):.0f} ms")
if not (ls.get("progress_messages") or 0) >= 3 or not 0 < (ls.get("targets_done") or 0) < (ls.get("targets_total") or 0):
    fails.append(f"the long score showed no progress: {ls}")
if ls.get("eta_before_s") is None or ls.get("eta_last_s") is None:
    fails.append(f"no estimated time for the long score: {ls}")
if stop.get("task") != "score":
    fails.append(f"the long score did not stop: {ls}")
elif not stop["ms"] < max_stop_ms:
    fails.append(f"the long score stopped {stop['ms']:.0f} ms after the click, over {max_stop_ms:.0f} ms")
if not (ls.get("ticks") or 0) >= 3 or not ls["max_gap_ms"] < max_gap_ms:
    fails.append(f"the main thread stalled during the long score: largest timer gap {ls.get('max_gap_ms')} ms (limit {max_gap_ms:.0f})")
gpu = res.get("webgpu")
if gpu:
    a = gpu["adapter"]
    print(f"   WebGPU ({res.get('webgpuMode')}): adapter {a.get('name')!r}, {a.get('backend')}, device type {a.get('device_type')}, "
          f"{'f16' if a.get('f16_weights') else 'f32'} weights, model built in {gpu.get('ms', float('nan')):.0f} ms; "
          f"chosen by default: {gpu.get('preferred')}")
    print(f"   runs on: {res.get('pathShown')!r}")
    scores = [s for s in [first, res.get("secondScore"), res.get("otherScore"), res.get("otherScoreWarm")] if s]
    on = {"webgpu": [s for s in scores if s.get("on") == "webgpu"], "cpu": [s for s in scores if s.get("on") == "cpu"]}
    for path, ss in on.items():
        if not ss:
            fails.append(f"the sample was not scored on {path}: {scores}")
            continue
        print(f"   sample on {path}: first {ss[0]['ms']:.1f} ms" + (f", warm {ss[1]['ms']:.1f} ms" if len(ss) > 1 else "") +
              f", bits per byte {ss[0]['bits_per_byte']!r} (|diff| to native {abs(ss[0]['bits_per_byte'] - native):.3e})")
        for s_ in ss:
            if not abs(s_["bits_per_byte"] - native) < tol:
                fails.append(f"the {path} score {s_['bits_per_byte']!r} differs from native {native!r} (tolerance {tol})")
    if gpu.get("preferred") != (a.get("device_type") != "Cpu") or first.get("on") != ("webgpu" if gpu.get("preferred") else "cpu"):
        fails.append(f"the default path does not follow the adapter (a software one is not chosen): {gpu}, first score on {first.get('on')}")
    gs = res.get("gpuStop") or {}
    st = gs.get("stop") or {}
    print(f"   long WebGPU score ({gs.get('windows_total')} windows) stopped {st.get('ms', float('nan')):.0f} ms after the click: {gs.get('shown')!r}")
    if gs.get("on") != "webgpu" or st.get("task") != "score" or not st.get("ms", 1e9) < max_stop_ms:
        fails.append(f"the long WebGPU score did not stop within {max_stop_ms:.0f} ms: {gs}")
    if res.get("hoverOn") == "webgpu" and "top guesses" not in card:
        fails.append(f"no top guesses on the hover card of a WebGPU score: {card!r}")
else:
    print(f"   WebGPU ({res.get('webgpuMode')}): none, the page scores on the CPU ({res.get('webgpuWhy')})")
    if os.environ.get("PGOLF_REQUIRE_WEBGPU") == "1":
        fails.append(f"PGOLF_REQUIRE_WEBGPU=1 but the page has no WebGPU: {res.get('webgpuWhy')}")
fl = res.get("firstLoad") or {}
print(f"   first load: {fl.get('name')!r} ({fl.get('source')}), demo: {fl.get('demo')}; note: {res.get('modelNote')!r}")
if fl.get("demo") != demo or (("tiny demo model" in (res.get("modelNote") or "")) != demo):
    fails.append(f"the page does not say plainly whether this is the tiny demo model (expected {demo}): {fl}, {res.get('modelNote')!r}")
models = res.get("models") or {}
want_bpb = (res.get("firstScore") or {}).get("bits_per_byte")
for key, source, name in [("url", "network", None), ("cached", "cache", None), ("file", "file", "model.ptz"),
                          ("dropped", "file", "dropped.ptz"), ("defaultAgain", "network", fl.get("name"))]:
    m = models.get(key) or {}
    print(f"   model {key}: {m.get('shown')!r}, {m.get('bytes')} bytes in {m.get('ms', float('nan')):.0f} ms, "
          f"{m.get('progress_messages')} progress messages, sample scored {m.get('bpb')!r}")
    if m.get("source") != source or (name is not None and m.get("name") != name):
        fails.append(f"model {key}: expected source {source!r}, name {name!r}: {m}")
    if m.get("bpb") != want_bpb or m.get("bytes") != res.get("artifactBytes"):
        fails.append(f"model {key} (the same artifact) scored {m.get('bpb')!r}, not {want_bpb!r}: {m}")
if (models.get("url") or {}).get("progress_messages", 0) < 1:
    fails.append(f"the URL download showed no progress: {models.get('url')}")
ref = models.get("refused") or {}
print(f"   a text file as the model: {ref.get('note')!r}")
if ref.get("loadsAdded") != 0 or "Could not load" not in (ref.get("note") or "") or not ref.get("shown"):
    fails.append(f"a file that is no artifact was not refused with the page keeping its model: {ref}")
if not os.path.isfile(shot):
    fails.append(f"no screenshot at {shot}")
else:
    print(f"   screenshot: {shot}")
for f in fails:
    print(f"browser-test: FAILED: {f}", file=sys.stderr)
sys.exit(1 if fails else 0)
PY
echo "browser-test: PASSED"
