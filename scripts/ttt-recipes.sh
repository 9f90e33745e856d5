#!/usr/bin/env bash
# The published full-model TTT recipes (`--ttt-recipe`), score-first, on a prefix of the val
# shard with the baseline artifact on the CPU: each under `--audit`, against the plain model on
# the same targets. Standard windows (the recipes' sliding windows cost 16x the scoring here),
# chunks of --chunk targets (default 16384; the recipes publish 32768). About 25 minutes on 2
# cores with the defaults, so not part of CI. The output, with the date, CPU and commit, goes
# to benchmarks/ttt-recipes.log (BENCHMARKS.md quotes it). Fails when an audit fails; whether
# each recipe gains is reported, not asserted (the published learning rates were tuned for
# other models and passes).
# Usage: scripts/ttt-recipes.sh [--tokens N] [--chunk C] [--recipes 'pr461 pr489 ...'] [extra eval flags]
# Env: PGOLF_SHARED (default ../shared), PGOLF_RT (a pgolf-rt binary to run instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${PGOLF_SHARED:-../shared}
tokens=65537
chunk=16384
recipes="pr461 pr489 pr581 pr687"
while [ $# -gt 0 ]; do
    case "$1" in
        --tokens) tokens=$2; shift 2 ;;
        --chunk) chunk=$2; shift 2 ;;
        --recipes) recipes=$2; shift 2 ;;
        *) break ;;
    esac
done
bin=${PGOLF_RT:-}
if [ -z "$bin" ]; then
    cargo build --release -q -p pgolf-rt
    bin=target/release/pgolf-rt
fi
out=$(mktemp)
eval_() {
    "$bin" eval --artifact "$S/reference/baseline9L_int8_zlib.ptz" \
        --data "$S/data/text_sp1024/fineweb_val_000000.bin" \
        --tokenizer "$S/data/tokenizers/pg_sp1024_bpe.model" \
        --backend cpu --max-tokens "$tokens" --json "$@"
}
{
    echo "# scripts/ttt-recipes.sh --tokens $tokens --chunk $chunk $* $(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, commit $(git rev-parse --short HEAD)"
    echo "## plain"
    eval_ "$@" 2>&1 | grep -v '^ttt:'
    for r in $recipes; do
        echo "## $r"
        eval_ --ttt-recipe "$r" --ttt-chunk "$chunk" --audit "$@" 2>&1 | grep -v '^ttt:'
    done
} | tee "$out"
python3 - "$out" <<'PY' | tee -a "$out"
import json, sys
runs, name = {}, None
for line in open(sys.argv[1]):
    if line.startswith("## "):
        name = line[3:].strip()
    elif line.startswith("{") and name:
        runs[name] = json.loads(line)
plain = runs["plain"]["val_bpb"]
ok = True
print(f"{'run':<8} {'val_bpb':>12} {'vs plain':>10} {'seconds':>8} audit")
for k, r in runs.items():
    audit = r.get("audit", {}).get("passed")
    gain = r["val_bpb"] - plain
    print(f"{k:<8} {r['val_bpb']:>12.8f} {gain:>+10.2e} {r['seconds']:>8.1f} {audit}")
    if k != "plain":
        ok &= audit is True
gains = [k for k, r in runs.items() if k != "plain" and r["val_bpb"] < plain]
print(f"recipes below the plain model: {', '.join(gains) or 'none'} (a recipe tuned for another model may not gain on this one)")
print("ttt-recipes: PASS (every audit passed)" if ok else "ttt-recipes: FAIL (an audit failed)")
sys.exit(0 if ok else 1)
PY
mkdir -p benchmarks
mv "$out" benchmarks/ttt-recipes.log
echo "ttt-recipes: log in benchmarks/ttt-recipes.log"
