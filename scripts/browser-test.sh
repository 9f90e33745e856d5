#!/usr/bin/env bash
# Browser test of the WASM build (issue 6): builds bindings/wasm (release) and its JS glue, serves
# examples/web on 127.0.0.1, loads the default model in Debian's headless Chromium, and checks
#   * the page's bits per byte of examples/web/fixed_text.txt equals native `pgolf-rt score`
#     within 1e-4,
#   * the page's first score of that ~1 KB text takes under 2 s (performance.now() in the page),
#   * a greedy continuation comes back non-empty,
# and saves a screenshot to $SCREENSHOT (default target/browser-test/screenshot.png).
# Installs what it needs (apt chromium + chromium-driver, rustup target wasm32-unknown-unknown,
# wasm-bindgen-cli matching Cargo.lock, playwright-core into scripts/browser/node_modules); each
# step is skipped when already done. The model is the committed default (models/); set
# PGOLF_ARTIFACT / PGOLF_TOKENIZER to test another.
# Env: PGOLF_ARTIFACT, PGOLF_TOKENIZER, SCREENSHOT, MAX_FIRST_SCORE_MS (2000), BPB_TOLERANCE (1e-4), TIMEOUT_S (300).
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
screenshot="${SCREENSHOT:-$root/target/browser-test/screenshot.png}"
max_ms="${MAX_FIRST_SCORE_MS:-2000}"
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

step "headless Chromium: load the model, score the fixed text, generate"
result="$(CHROMIUM="$chromium_bin" node scripts/browser/test.mjs "http://127.0.0.1:$port/index.html" \
  "$screenshot" "$timeout_s")" || true
[ -n "$result" ] || die "the browser driver printed nothing"

python3 - "$result" "$native_bpb" "$tol" "$max_ms" "$screenshot" <<'PY'
import json, math, os, sys
res, native, tol, max_ms, shot = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
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
gen = res.get("generation") or {}
print(f"   greedy continuation ({gen.get('ms', float('nan')):.0f} ms): {gen.get('prompt', '')!r} + {gen.get('text')!r}")
if not gen.get("text"):
    fails.append(f"no continuation: {gen}")
if not os.path.isfile(shot):
    fails.append(f"no screenshot at {shot}")
else:
    print(f"   screenshot: {shot}")
for f in fails:
    print(f"browser-test: FAILED: {f}", file=sys.stderr)
sys.exit(1 if fails else 0)
PY
echo "browser-test: PASSED"
