#!/usr/bin/env bash
# Builds, on this CPU-only machine, everything the GPU machine needs (it has CUDA 13 but no Rust
# toolchain) into gpu-bundle/ (gitignored), small enough for the device tool's `carry` (64 MiB):
#   gpu-bundle/bin/pgolf-rt                 release CLI built with --features cuda (stripped)
#   gpu-bundle/bin/cuda_parity              test binary: every op + model NLL vs the CPU oracle
#   gpu-bundle/bin/cuda_train_parity        test binary: every backward op, tiny-model gradients,
#                                           trainer steps and LoRA TTT vs the CPU oracle
#   gpu-bundle/bin/cuda_kernels_compile     test binary: NVRTC compiles every cuda/*.cu for sm_90
#   gpu-bundle/shared/...                   both reference artifacts, the val shard, one train
#                                           shard, the tokenizer
# Then, on the GPU machine: scripts/gpu-check.sh (see its header).
# Usage: scripts/gpu-build.sh   (needs ../shared beside the repository, or PGOLF_SHARED=DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${PGOLF_SHARED:-../shared}
OUT=gpu-bundle

cargo build --release -p pgolf-rt --features cuda --bin pgolf-rt
# Test binaries: ask cargo where it put them.
mapfile -t TESTS < <(cargo test -p pgolf-rt --features cuda \
    --test cuda_parity --test cuda_train_parity --test cuda_kernels_compile --no-run \
    --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + " " + m["executable"])
')
[ "${#TESTS[@]}" -eq 3 ] || { echo "gpu-build: expected 3 test binaries, got: ${TESTS[*]}" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/shared/reference" "$OUT/shared/data/text_sp1024" "$OUT/shared/data/tokenizers"
cp target/release/pgolf-rt "$OUT/bin/"
for t in "${TESTS[@]}"; do
    cp "${t#* }" "$OUT/bin/${t%% *}"
done
# The target dir may be shared: make sure nobody replaced the binaries with non-cuda builds.
for f in pgolf-rt cuda_parity cuda_train_parity; do
    grep -q "CUDA unavailable" "$OUT/bin/$f" || { echo "gpu-build: $OUT/bin/$f is not a --features cuda build (rerun)" >&2; exit 1; }
done
if command -v strip >/dev/null; then strip "$OUT"/bin/*; fi
cp "$SHARED"/reference/README.md "$SHARED"/reference/*.ptz "$OUT/shared/reference/"
cp "$SHARED"/data/text_sp1024/fineweb_val_000000.bin "$SHARED"/data/text_sp1024/fineweb_train_000000.bin \
    "$OUT/shared/data/text_sp1024/"
cp "$SHARED"/data/tokenizers/pg_sp1024_bpe.model "$OUT/shared/data/tokenizers/"
git rev-parse --short HEAD > "$OUT/COMMIT" 2>/dev/null || true
{ date -u +%FT%TZ; git status --short 2>/dev/null | head -50; } > "$OUT/BUILD_INFO"

du -sh "$OUT"
BYTES=$(du -sb "$OUT" | cut -f1)
if [ "$BYTES" -gt $((64 * 1024 * 1024)) ]; then
    echo "gpu-build: WARNING: $OUT is $BYTES bytes, over the device tool's 64 MiB carry limit" >&2
fi
echo "gpu-build: done. On the GPU machine: bash scripts/gpu-check.sh (carry: $OUT)"
