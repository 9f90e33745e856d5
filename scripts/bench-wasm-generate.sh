#!/usr/bin/env bash
# Generation tokens/s, WASM in headless Chromium and native, with the KV cache and with the full
# recompute per token, at about 64 and 512 tokens of context (issue 18's benchmark; not in CI).
# Needs what scripts/browser-test.sh installs (run it once first). Prints a table.
# Env: PGOLF_ARTIFACT (default ../shared/reference/baseline9L_int8_zlib.ptz), PGOLF_TOKENIZER, N (32).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${PGOLF_SHARED:-../shared}
export PGOLF_ARTIFACT="${PGOLF_ARTIFACT:-$S/reference/baseline9L_int8_zlib.ptz}"
export PGOLF_TOKENIZER="${PGOLF_TOKENIZER:-$S/data/tokenizers/pg_sp1024_bpe.model}"
n="${N:-32}"
echo "# $(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, commit $(git rev-parse --short HEAD), $(basename "$PGOLF_ARTIFACT"), $n tokens"
examples/web/prepare.sh >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
python3 -m http.server --bind 127.0.0.1 --directory examples/web "$port" >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
sleep 1
wasm="$(node scripts/browser/bench-generate.mjs "http://127.0.0.1:$port/index.html" "$n")"
cargo build --release -q -p pgolf-rt
python3 - "$wasm" "$n" <<'PY'
import json, subprocess, sys
r, n = json.loads(sys.argv[1]), int(sys.argv[2])
if not r.get("ok"):
    sys.exit(f"bench-wasm-generate: the browser run failed: {r.get('error')}")
import os
art, tok = os.environ["PGOLF_ARTIFACT"], os.environ["PGOLF_TOKENIZER"]
print(f"{'path':<8} {'context':>7} {'decoding':<10} {'tokens/s':>9}")
for run in r["runs"]:
    if "same_text" in run:
        print(f"wasm     {run['context']:>7} same text cached vs recompute: {run['same_text']}")
        continue
    print(f"wasm     {run['context']:>7} {run['decoding']:<10} {run['tokens_per_s']:>9.1f}")
# Natively, one thread (as the page's WASM), on the same prompts.
for run in r["runs"]:
    if "same_text" in run or run["decoding"] != "kv-cache":
        continue
    prompt = run["prompt"]
    for flag in ([], ["--no-kv-cache"]):
        args = ["target/release/pgolf-rt", "generate", "--artifact", art, "--tokenizer", tok,
                "--tokens", str(n + 1), "--temperature", "0", "--threads", "1", *flag, prompt]
        p = subprocess.run(args, capture_output=True, text=True, check=True)
        print(f"native   {p.stderr.strip().splitlines()[-1]}")
PY
