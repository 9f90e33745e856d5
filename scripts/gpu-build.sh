#!/usr/bin/env bash
# Builds, on this CPU-only machine, everything the GPU machine needs (it has CUDA 13 and PyTorch
# but no Rust toolchain and no network), for scripts/gpu-check.sh:
#   gpu-bundle/bin.tar.xz        the binaries, stripped and compressed (gpu-check.sh unpacks
#                                them into gpu-bundle/bin/ on the GPU machine):
#       pgolf-rt                 release CLI, --features cuda,wgpu
#       cuda_parity              test binary: every op + model NLL vs the CPU oracle
#       cuda_train_parity        test binary: every backward op, tiny-model gradients, trainer
#                                steps and LoRA TTT vs the CPU oracle
#       cuda_bf16                test binary: --precision bf16 vs the CPU (products, ops, 2 windows)
#       cuda_kernels_compile     test binary: NVRTC compiles every cuda/*.cu for sm_90
#   gpu-bundle/shared/...        both reference artifacts, the val shard, one train shard, the
#                                tokenizer (what the check reads)
#   .gl/*.deb                    Debian's Vulkan loader (libvulkan1), for the wgpu stage on a
#                                machine without one (best effort: skipped without apt)
# and checks that the bundle, .gl and the working tree (what the device tool sends) stay under
# 60 MiB of the tool's 64 MiB limit: it fails otherwise.
#
# On the GPU machine (one `run` call, carrying gpu-bundle and .gl):
#   bash scripts/gpu-check.sh
#
# `--dry-run` builds target/gpu-bundle-dry instead: uncompressed, with the kernel emulator
# (--features cuda,cuda-emu,wgpu: every pgolf-rt feature, so it reuses what the test command
# built), for `GPU_CHECK_DRY_RUN=1 bash scripts/gpu-check.sh` on this machine.
# Usage: scripts/gpu-build.sh [--dry-run]   (needs ../shared beside the repository, or PGOLF_SHARED=DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${PGOLF_SHARED:-../shared}
DRY=0
[ "${1:-}" = --dry-run ] && DRY=1
LIMIT=$((60 * 1024 * 1024))
if [ $DRY = 1 ]; then
    OUT=target/gpu-bundle-dry
    FEATURES=cuda,cuda-emu,wgpu
    # Exactly the README's test command's build (workspace, all features), so CI reuses it.
    SEL=(--workspace --all-features)
else
    OUT=gpu-bundle
    FEATURES=cuda,wgpu
    SEL=(-p pgolf-rt --features "$FEATURES")
fi

cargo build --release "${SEL[@]}" --bin pgolf-rt
# Test binaries: ask cargo where it put them.
mapfile -t TESTS < <(cargo test --release "${SEL[@]}" \
    --test cuda_parity --test cuda_train_parity --test cuda_bf16 --test cuda_kernels_compile --no-run \
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
[ "${#TESTS[@]}" -eq 4 ] || { echo "gpu-build: expected 4 test binaries, got: ${TESTS[*]}" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/shared/reference" "$OUT/shared/data/text_sp1024" "$OUT/shared/data/tokenizers"
cp target/release/pgolf-rt "$OUT/bin/"
for t in "${TESTS[@]}"; do
    cp "${t#* }" "$OUT/bin/${t%% *}"
done
# The target dir may be shared: make sure nobody replaced the binaries with non-cuda builds.
for f in pgolf-rt cuda_parity cuda_train_parity cuda_bf16; do
    grep -q "CUDA unavailable" "$OUT/bin/$f" || { echo "gpu-build: $OUT/bin/$f is not a --features cuda build (rerun)" >&2; exit 1; }
done
if command -v strip >/dev/null; then strip "$OUT"/bin/*; fi
cp "$SHARED"/reference/README.md "$SHARED"/reference/*.ptz "$OUT/shared/reference/"
cp "$SHARED"/data/text_sp1024/fineweb_val_000000.bin "$SHARED"/data/text_sp1024/fineweb_train_000000.bin \
    "$OUT/shared/data/text_sp1024/"
cp "$SHARED"/data/tokenizers/pg_sp1024_bpe.model "$OUT/shared/data/tokenizers/"
git rev-parse --short HEAD >"$OUT/COMMIT" 2>/dev/null || true
{
    echo "built $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null) features $FEATURES"
    git status --short 2>/dev/null | head -50
} >"$OUT/BUILD_INFO"

if [ $DRY = 0 ]; then
    # Compressed binaries: about a third of their size, unpacked by gpu-check.sh.
    tar -C "$OUT" -cJf "$OUT/bin.tar.xz" bin
    rm -rf "$OUT/bin"
    # The Vulkan loader for the wgpu stage (the device tool's recipe; best effort).
    if command -v apt-get >/dev/null && [ ! -f .gl/libvulkan1.deb ]; then
        grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >>.git/info/exclude
        mkdir -p .gl
        (cd .gl && apt-get download libvulkan1 >/dev/null 2>&1 && mv libvulkan1_*.deb libvulkan1.deb) ||
            echo "gpu-build: could not download libvulkan1 (the wgpu stage needs a Vulkan loader there)" >&2
    fi
fi

du -sh "$OUT"
BUNDLE=$(du -sb "$OUT" | cut -f1)
GL=$( [ -d .gl ] && du -sb .gl | cut -f1 || echo 0)
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
TOTAL=$((BUNDLE + GL + TREE))
echo "gpu-build: bundle $BUNDLE + .gl $GL + working tree $TREE = $TOTAL bytes (limit $LIMIT, the device tool's is 64 MiB)"
if [ $DRY = 0 ] && [ "$TOTAL" -gt "$LIMIT" ]; then
    echo "gpu-build: FAILED: $TOTAL bytes is over $LIMIT: the call would not fit the device tool" >&2
    exit 1
fi
if [ $DRY = 1 ]; then
    echo "gpu-build: done. Here: GPU_CHECK_DRY_RUN=1 OUT=DIR bash scripts/gpu-check.sh"
else
    echo "gpu-build: done. On the GPU machine: bash scripts/gpu-check.sh (carry: $OUT and .gl)"
fi
