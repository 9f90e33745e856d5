#!/usr/bin/env bash
# Full-shard parity with PyTorch, including sliding-window eval at stride 64 (about 16x the
# work of standard eval: over an hour on a 2-core machine, so not part of CI). The test
# itself asserts the bounds (2e-3 val_bpb of PyTorch's H100 numbers; 1e-6 of PyTorch float32
# for standard eval). Its output, with the date, CPU and commit, is kept in
# benchmarks/parity-full.log, the log BENCHMARKS.md points to.
# Usage: scripts/parity-full.sh   (needs ../shared beside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
log=benchmarks/parity-full.log
tmp=$(mktemp)
{
    echo "# scripts/parity-full.sh $(date -u +%FT%TZ), $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, commit $(git rev-parse --short HEAD)"
    cargo test --release -p pgolf-rt --test eval_reference -- --include-ignored --nocapture --test-threads 1 2>&1
} | tee "$tmp"
# The check: every test passed and the three full-shard figures are in the log.
grep -q 'test result: ok. 3 passed' "$tmp" || { echo "parity-full: FAIL" >&2; exit 1; }
for m in 'baseline9L standard' 'mlp3x11L standard' 'mlp3x11L sliding s64'; do
    grep -q "^$m: val_bpb" "$tmp" || { echo "parity-full: no '$m' line" >&2; exit 1; }
done
mv "$tmp" "$log"
echo "parity-full: PASS (log: $log)"
