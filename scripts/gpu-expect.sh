#!/usr/bin/env bash
# Rewrites scripts/gpu-expect.tsv: what scripts/gpu-check.sh holds each stage to. Every value is
# the float32 CPU result of exactly the command the check runs (gpu-check.sh's expectation
# mode, GPU_CHECK_EXPECT=1, `--backend cpu`), at the GPU run's sizes and at the dry run's
# (`dry.` keys). Rows this run does not recompute (GPU_CHECK_EXPECT_SKIP, e.g. the 2.6-hour
# full-shard sliding eval) are kept from the file as they are, with their source.
#   scripts/gpu-expect.sh            everything (about an hour on 2 cores)
#   scripts/gpu-expect.sh --dry-only the dry run's rows only (a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/gpu-bundle-dry/bin/pgolf-rt ] || scripts/gpu-build.sh --dry-run
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GPU_CHECK_EXPECT=1 GPU_CHECK_DRY_RUN=1 OUT="$tmp/dry" bash scripts/gpu-check.sh
new=("$tmp/dry/expect.tsv")
if [ "${1:-}" != --dry-only ]; then
    GPU_CHECK_EXPECT=1 OUT="$tmp/full" GPU_CHECK_EXPECT_SKIP="${GPU_CHECK_EXPECT_SKIP-full-slide-mlp3x11L-f32}" \
        bash scripts/gpu-check.sh
    new+=("$tmp/full/expect.tsv")
fi
out=scripts/gpu-expect.tsv
date=$(date -u +%F)
cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
{
    echo "# What scripts/gpu-check.sh holds each stage to: key, value (val_bpb, or a trained loss),"
    echo "# tolerance, source. Written by scripts/gpu-expect.sh (float32 CPU results of the same"
    echo "# commands); rows it did not recompute keep their own source."
    # New rows, stamped; then the old rows whose keys were not recomputed.
    cat "${new[@]}" | awk -F'\t' -v d="$date" -v c="$cpu" -v g="$commit" 'BEGIN { OFS = "\t" }
        { print $1, $2, $3, $4 ", " d ", " c ", commit " g }'
    if [ -f "$out" ]; then
        grep -v '^#' "$out" | awk -F'\t' 'NR == FNR { seen[$1] = 1; next } !($1 in seen)' <(cat "${new[@]}") -
    fi
} | awk '/^#/ { print; next } { print | "sort" }' >"$tmp/expect.tsv"
mv "$tmp/expect.tsv" "$out"
echo "gpu-expect: wrote $out ($(grep -vc '^#' "$out") rows)"
