#!/usr/bin/env bash
# Runs ON the GPU machine (CUDA 13.0, driver 580, no Rust toolchain), from the repository root,
# with gpu-bundle/ built here by scripts/gpu-build.sh and carried over:
#   1. prints the GPU, driver and CUDA libraries;
#   2. runs the prebuilt test binaries: cuda_kernels_compile (NVRTC, sm_90) and cuda_parity
#      (every op + first 2 windows' NLL of both reference artifacts vs the CPU oracle, f32);
#      and cuda_train_parity (every backward op, tiny-model gradients, trainer steps, LoRA TTT);
#   3. evaluates both reference artifacts on the val shard with `--backend cuda --json`,
#      standard and sliding (--stride 64), and sliding again with PGOLF_CUDA_TF32=1 (TF32
#      GEMMs, tensor-core attention), and prints val_bpb vs PyTorch and tokens/s vs
#      PyTorch's 5.5 M tok/s (standard) and 88 k tok/s (sliding) from shared/reference/README.md;
#   4. (ttt) LoRA TTT on the baseline with the published recipe over the whole val shard (64
#      documents batched, as PyTorch ran it), plain and with the Hedge mixer: val_bpb vs PyTorch's 1.41559021, tokens/s vs its 83 k tok/s;
#   5. (train) step time of the baseline config (524,288 tokens per step) on one train shard,
#      f32, and TF32 GEMMs with tensor-core forward attention, vs PyTorch's 352.8 ms.
# Usage: bash scripts/gpu-check.sh [all|tests|eval|ttt|train]   (default all; GPU_BUNDLE=DIR)
# Each step has its own timeout; the script goes on after a failure and exits non-zero at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
B=${GPU_BUNDLE:-gpu-bundle}
[ -x "$B/bin/pgolf-rt" ] || { echo "gpu-check: $B/bin/pgolf-rt missing: run scripts/gpu-build.sh here and carry $B" >&2; exit 2; }
B=$(cd "$B" && pwd)
export LD_LIBRARY_PATH="/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/cuda/lib64:/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PGOLF_SHARED="$B/shared"
unset PGOLF_CUDA_TF32
S=$PGOLF_SHARED
FAIL=0

echo "== GPU =="
date -u +%FT%TZ
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || FAIL=1
nvidia-smi | head -5
echo "CUDA libraries:"
ls /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null | grep -E '^lib(nvrtc|cublas|cublasLt)\.so' || echo "  (none under /usr/local/cuda/targets/x86_64-linux/lib)"
ls /usr/lib/x86_64-linux-gnu 2>/dev/null | grep -E '^libcuda\.so' || true
cat "$B/BUILD_INFO" 2>/dev/null | head -1

if [ "$WHAT" = all ] || [ "$WHAT" = tests ]; then
    echo "== cuda_kernels_compile =="
    timeout 120 "$B/bin/cuda_kernels_compile" --nocapture || FAIL=1
    echo "== cuda_parity (f32 path, tolerance 1e-4) =="
    timeout 300 "$B/bin/cuda_parity" --nocapture --test-threads=1 gpu:: || FAIL=1
    echo "== cuda_train_parity (backward ops, gradients, trainer, LoRA TTT; tolerance 1e-4) =="
    timeout 300 "$B/bin/cuda_train_parity" --nocapture --test-threads=1 gpu:: || FAIL=1
fi

if [ "$WHAT" = all ] || [ "$WHAT" = eval ]; then
    ROWS=()
    # name artifact mode(standard|sliding) pytorch_bpb pytorch_tok_s [tf32: 1 = TF32 GEMMs and
    # tensor-core attention]
    run_eval() {
        local name=$1 art=$2 mode=$3 ref_bpb=$4 ref_tps=$5 tf32=${6:-0}
        local extra=() out json
        [ "$mode" = sliding ] && extra=(--stride 64)
        [ "$tf32" = 1 ] && mode="$mode+tf32"
        echo "== eval $name $mode =="
        out=$(PGOLF_CUDA_TF32=$tf32 timeout 500 "$B/bin/pgolf-rt" eval --backend cuda --json --batch 32 \
            --artifact "$S/reference/$art" --data "$S/data/text_sp1024/fineweb_val_000000.bin" \
            --tokenizer "$S/data/tokenizers/pg_sp1024_bpe.model" "${extra[@]}" 2>&1)
        local rc=$?
        echo "$out" | tail -4
        json=$(echo "$out" | grep '^{' | tail -1)
        if [ $rc -ne 0 ] || [ -z "$json" ]; then
            FAIL=1
            ROWS+=("$(printf '%-12s %-13s %12s %12s %10s %14s %14s %7s' "$name" "$mode" FAILED "$ref_bpb" - - "$ref_tps" -)")
            return
        fi
        local bpb tokens secs
        bpb=$(echo "$json" | grep -o '"val_bpb":[-0-9.eE+]*' | cut -d: -f2)
        tokens=$(echo "$json" | grep -o '"tokens":[0-9]*' | cut -d: -f2)
        secs=$(echo "$json" | grep -o '"seconds":[-0-9.eE+]*' | cut -d: -f2)
        ROWS+=("$(awk -v n="$name" -v m="$mode" -v b="$bpb" -v rb="$ref_bpb" -v t="$tokens" -v s="$secs" -v rt="$ref_tps" 'BEGIN {
            tps = t / s; d = (rb == "-") ? "-" : sprintf("%+.2e", b - rb);
            ok = (rb == "-") ? "-" : ((b - rb < 2e-3 && rb - b < 2e-3) ? "ok" : "FAIL");
            x = (rt == "-") ? "-" : sprintf("%.2fx", tps / rt);
            printf "%-12s %-13s %12.8f %12s %10s %14.0f %14s %7s %s", n, m, b, rb, d, tps, rt, x, ok }')")
        if [ "$ref_bpb" != - ]; then
            awk -v b="$bpb" -v rb="$ref_bpb" 'BEGIN { exit !(b - rb < 2e-3 && rb - b < 2e-3) }' || FAIL=1
        fi
    }
    run_eval baseline9L baseline9L_int8_zlib.ptz standard 1.44020659 5500000
    run_eval baseline9L baseline9L_int8_zlib.ptz sliding - 88000
    run_eval mlp3x11L mlp3x11L_int6_zstd.ptz standard 1.52212443 5500000
    run_eval mlp3x11L mlp3x11L_int6_zstd.ptz sliding 1.50767210 88000
    run_eval baseline9L baseline9L_int8_zlib.ptz sliding - 88000 1
    run_eval mlp3x11L mlp3x11L_int6_zstd.ptz sliding 1.50767210 88000 1
    echo
    echo "== summary (PyTorch: shared/reference/README.md, same H100 model; bpb tolerance 2e-3) =="
    printf '%-12s %-13s %12s %12s %10s %14s %14s %7s %s\n' model eval val_bpb torch_bpb diff tokens/s torch_tok/s speedup bpb
    for r in "${ROWS[@]}"; do echo "$r"; done
fi
if [ "$WHAT" = all ] || [ "$WHAT" = ttt ]; then
    for mix in none hedge; do
        echo "== LoRA TTT, baseline9L, rank 8 on q,v,head, Adam 0.01, chunk 256, window 1024 (mix: $mix) =="
        extra=()
        [ "$mix" = hedge ] && extra=(--mix hedge)
        # 64 documents advance together, as PyTorch's run did (batch 64 docs).
        out=$(timeout 400 "$B/bin/pgolf-rt" eval --backend cuda --json --ttt lora --ttt-batch-docs 64 "${extra[@]}" \
            --artifact "$S/reference/baseline9L_int8_zlib.ptz" \
            --data "$S/data/text_sp1024/fineweb_val_000000.bin" \
            --tokenizer "$S/data/tokenizers/pg_sp1024_bpe.model" 2>&1)
        rc=$?
        echo "$out" | grep -v '^ttt: docs' | tail -6
        json=$(echo "$out" | grep '^{' | tail -1)
        if [ $rc -ne 0 ] || [ -z "$json" ]; then FAIL=1; continue; fi
        echo "$json" | awk '{
            match($0, /"val_bpb":[-0-9.eE+]*/); b = substr($0, RSTART + 10, RLENGTH - 10);
            match($0, /"tokens":[0-9]*/); t = substr($0, RSTART + 9, RLENGTH - 9);
            match($0, /"seconds":[-0-9.eE+]*/); s = substr($0, RSTART + 10, RLENGTH - 10);
            printf "ttt summary: val_bpb %.8f (PyTorch 1.41559021, diff %+.2e), %.0f tokens/s (PyTorch 83k: %.2fx)\n",
                b, b - 1.41559021, t / s, t / s / 83000 }'
    done
fi

if [ "$WHAT" = all ] || [ "$WHAT" = train ]; then
    for tf32 in 0 1; do
        echo "== train step, baseline config (9L d512, 524,288 tokens/step, grad-accum 8), PGOLF_CUDA_TF32=$tf32 =="
        dir=$(mktemp -d)
        out=$(cd "$dir" && PGOLF_CUDA_TF32=$tf32 DATA_PATH="$S/data/text_sp1024" \
            TOKENIZER_PATH="$S/data/tokenizers/pg_sp1024_bpe.model" ITERATIONS=4 WARMUP_STEPS=0 \
            VAL_LOSS_EVERY=0 VAL_MAX_TOKENS=65536 TRAIN_LOG_EVERY=1 MAX_WALLCLOCK_SECONDS=0 PGOLF_PROFILE=1 \
            timeout 300 "$B/bin/pgolf-rt" train --backend cuda 2>&1)
        rc=$?
        echo "$out" | grep -E 'backend:|^step:|^profile|roundtrip_exact|error' | tail -12
        [ $rc -eq 0 ] || FAIL=1
        rm -rf "$dir"
    done
    echo "(PyTorch on the H100: 352.8 ms/step; target 250 ms. The first step includes NVRTC and warm-up.)"
fi

echo
[ $FAIL -eq 0 ] && echo "gpu-check: PASS" || echo "gpu-check: FAILURES (see above)"
exit $FAIL
