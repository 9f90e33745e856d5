#!/usr/bin/env bash
# The GPU check: one command, run ON the GPU machine (CUDA 13, driver 580, PyTorch, no Rust, no
# network) from the repository root with the bundle built here by scripts/gpu-build.sh carried
# over. It ends by itself within GPU_CHECK_DEADLINE_S (default 540 s) of wall time: every stage
# runs under `timeout` capped by the time left, a stage that needs more than is left is skipped
# (and says so), and each stage's start, end, seconds and exit code are printed as they happen.
#
#   bash scripts/gpu-check.sh                       # OUT=DIR to keep the results (default: a temp dir)
#   GPU_CHECK_DRY_RUN=1 OUT=DIR bash scripts/gpu-check.sh   # here, without a GPU (see below)
#   GPU_CHECK_ONLY=smoke,op-parity bash scripts/gpu-check.sh   # a subset (by stage name prefix)
#   bash scripts/gpu-check.sh --list-stages
#
# Results survive a kill: everything is tee'd to $OUT/log.txt while it runs, and one line per
# finished stage is appended to $OUT/summary.tsv (stage, rc, seconds, val_bpb or loss,
# expected, tokens/s, vs PyTorch, note, the stage's last JSON line). At most 8 files go to $OUT.
# An rc of 0 means the command succeeded, printed no SKIPPED line, and matched its expected
# value (scripts/gpu-expect.tsv: float32 CPU results of this machine's commit for exactly the
# same token counts, ~1e-5 for f32; 2e-3 for tf32 and bf16 against the same f32 numbers).
# rc 86 = a test printed SKIPPED (PGOLF_REQUIRE_CUDA=1 is set, so that should not happen),
# 87 = a value off its expectation, 124/137 = timed out, "skip" = not run for lack of time (or after a failed smoke
# stage). The script exits 1 if any stage failed, 3 if none failed but some were skipped, 0
# when every stage ran and passed.
#
# Stages, in order of value, with their expected duration on an H200 (estimates: nothing has
# run yet; the first run replaces them with measurements in BENCHMARKS.md):
#   env            ~5 s   GPU, driver, clocks; `pgolf-rt devices`: which libcuda/libnvrtc/
#                         libcublas/libcublasLt/libnccl files were loaded, their versions, the
#                         device, precisions, kernel compilation or disk-cache hits.
#   smoke          ~15 s  baseline9L, first 2 windows (2,048 targets), f32, CUDA_LAUNCH_BLOCKING=1,
#                         against the CPU's val_bpb (1e-5). If it fails: `smoke-ops` (a handful
#                         of single-op parity tests, launch-blocking) and stop.
#   op-parity      ~40 s  cuda_parity gpu::* (every forward op vs the CPU oracle, both reference
#                         artifacts' first 2 windows, tensor-core attention).
#   bf16-parity    ~30 s  cuda_bf16 gpu::* (cuBLAS's bf16 products vs the CPU's bf16 reference,
#                         every forward and backward op in bf16, 2 windows within 2e-3 bpb).
#   torch-eval     ~60 s  PyTorch on this GPU (bf16 autocast + torch.compile, as the challenge
#                         runs it): baseline9L sliding eval over the 131,072-target prefix and
#                         standard eval of the full val shard: the reference for every ratio.
#   eval-std-*     ~10 s  standard eval, full val shard (1,054,720 targets), both artifacts, f32:
#                         val_bpb vs the CPU (1e-5) and tokens/s vs PyTorch.
#   eval-slide-*   ~30 s  sliding eval (stride 64) over the first 131,072 targets, both
#                         artifacts, f32 and bf16 (tf32 comes in (g), if time is left).
#   torch-train    ~80 s  PyTorch: 6 training steps of the baseline configuration (524,288 tokens
#                         per step, 8 micro-steps), bf16 autocast + torch.compile: median step ms.
#   train3-*       ~60 s  pgolf-rt train, 3 steps of the same configuration with --profile, f32
#                         and bf16: losses vs the CPU's (f32), step time vs PyTorch.
#   train-parity   ~60 s  cuda_train_parity gpu::* (every backward op, whole-model gradients,
#                         trainer steps, LoRA TTT vs the CPU oracle).
#   full-slide-*   ~40 s  (if time is left) sliding eval of the full val shard, mlp3x11L, f32 and
#                         bf16, vs the CPU's 1.50701674.
#   ttt-lora-*     ~30 s  (if time is left) LoRA TTT, baseline9L, the first 64 documents
#                         batched, vs the CPU's val_bpb.
#   *-tf32         ~90 s  (if time is left) the baseline9L sliding eval and train3 in tf32.
#   wgpu-vulkan    ~30 s  (if time is left) the wgpu backend on this GPU through Vulkan (the
#                         loader is unpacked from .gl/*.deb when carried), 2 windows vs the CPU.
#   sanitizer      ~60 s  (if time is left) compute-sanitizer memcheck on the tensor-core
#                         attention test.
#
# Dry run (GPU_CHECK_DRY_RUN=1): every stage on this machine, on the kernel emulator
# (`--backend cuda-emu`, the `emu::` tests) at tiny sizes, without PyTorch (the torch-* rows say
# "dry"), in under 5 minutes, with the same summary.tsv; its expectations are the `dry.` rows of
# scripts/gpu-expect.tsv. CI runs it (scripts/gpu-build.sh --dry-run builds its bundle) so the
# script's own bugs are found here, not on the GPU.
#
# Expectations (GPU_CHECK_EXPECT=1, with or without GPU_CHECK_DRY_RUN=1): the same stages'
# commands with `--backend cpu` (f32 only, no deadline, no tests, no PyTorch), each value
# written to $OUT/expect.tsv; scripts/gpu-expect.sh runs this and rewrites scripts/gpu-expect.tsv,
# so the expectations come from exactly the commands the check runs.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DRY=${GPU_CHECK_DRY_RUN:-0}
EXPECT_MODE=${GPU_CHECK_EXPECT:-0}
DEADLINE=${GPU_CHECK_DEADLINE_S:-540}
[ "$EXPECT_MODE" = 1 ] && DEADLINE=${GPU_CHECK_DEADLINE_S:-100000}
ONLY=${GPU_CHECK_ONLY:-}
RESERVE=10 # seconds kept for the summary after the last stage

STAGES=(env smoke op-parity bf16-parity torch-eval eval-std eval-slide torch-train train3 train-parity
    full-slide ttt-lora wgpu-vulkan sanitizer)
if [ "${1:-}" = --list-stages ]; then
    printf '%s\n' "${STAGES[@]}"
    exit 0
fi

if [ "$EXPECT_MODE" = 1 ]; then
    B=${GPU_BUNDLE:-target/gpu-bundle-dry}
    [ -x "$B/bin/pgolf-rt" ] || B=gpu-bundle
    BACKEND=cpu
    FILTER=emu::
    KEYP=
    [ "$DRY" = 1 ] && KEYP=dry.
elif [ "$DRY" = 1 ]; then
    B=${GPU_BUNDLE:-target/gpu-bundle-dry}
    BACKEND=cuda-emu
    FILTER=emu::
    KEYP=dry.
else
    B=${GPU_BUNDLE:-gpu-bundle}
    BACKEND=cuda
    FILTER=gpu::
    KEYP=
fi
if [ ! -x "$B/bin/pgolf-rt" ] && [ -f "$B/bin.tar.xz" ]; then
    # The bundle carries its binaries compressed (scripts/gpu-build.sh).
    tar -C "$B" -xJf "$B/bin.tar.xz" 2>/dev/null ||
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$B/bin.tar.xz" "$B"
fi
[ -x "$B/bin/pgolf-rt" ] || {
    echo "gpu-check: $B/bin/pgolf-rt missing: run scripts/gpu-build.sh$([ "$DRY" = 1 ] && echo ' --dry-run') first (and carry $B)" >&2
    exit 2
}
B=$(cd "$B" && pwd)
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
LOG=$OUT/log.txt
SUM=$OUT/summary.tsv
exec > >(tee -a "$LOG") 2>&1
T0=${EPOCHREALTIME/,/.}

now() { awk -v a="${EPOCHREALTIME/,/.}" -v b="$T0" 'BEGIN { printf "%.1f", a - b }'; }
left() { awk -v a="${EPOCHREALTIME/,/.}" -v b="$T0" -v d="$DEADLINE" -v r="$RESERVE" 'BEGIN { printf "%d", d - r - (a - b) }'; }

export PGOLF_SHARED="$B/shared"
S=$PGOLF_SHARED
REF=$S/reference
VAL=$S/data/text_sp1024/fineweb_val_000000.bin
TOK=$S/data/tokenizers/pg_sp1024_bpe.model
PG="$B/bin/pgolf-rt"
EXPECT=${GPU_CHECK_EXPECT_FILE:-$ROOT/scripts/gpu-expect.tsv}
unset PGOLF_CUDA_TF32 PGOLF_PRECISION
# Compiled kernels: cached on disk in a writable folder (CUBIN from NVRTC; the driver's own
# JIT cache, should it be used, beside it).
export PGOLF_KERNEL_CACHE="${PGOLF_KERNEL_CACHE:-$WORK/kernels}"
export CUDA_CACHE_PATH="${CUDA_CACHE_PATH:-$WORK/cuda-cache}"
if [ "$DRY" != 1 ] && [ "$EXPECT_MODE" != 1 ]; then
    export PGOLF_REQUIRE_CUDA=1
    # CUDA libraries: the toolkit, the driver's folder, and PyTorch's wheels (pgolf-rt also
    # searches these itself; the loader path makes the test binaries find them too).
    PYLIBS=$(python3 -c 'import glob, site, os; print(":".join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/*/lib/lib*.so*")})))' 2>/dev/null)
    export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64${PYLIBS:+:$PYLIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
[ -f "$SUM" ] || printf 'stage\trc\tseconds\tvalue\texpected\ttokens_per_s\tvs_torch\tnote\tjson\n' >"$SUM"

FAIL=0
SKIPPED=0
STOP=""
declare -A TORCH # torch tokens/s (eval) or step ms (train), by what they measure

# expect KEY -> "value tolerance" from scripts/gpu-expect.tsv (empty when absent)
expect() { awk -F'\t' -v k="$1" '$1 == k { print $2, $3; exit }' "$EXPECT" 2>/dev/null; }
jfield() { # jfield JSON FIELD: a number or string field of a one-line JSON object
    printf '%s' "$1" | grep -o "\"$2\":[^,}]*" | head -1 | cut -d: -f2- | tr -d '"'
}
wanted() { # wanted STAGE: in GPU_CHECK_ONLY (prefixes), or no filter
    [ -z "$ONLY" ] && return 0
    local s
    for s in ${ONLY//,/ }; do [[ $1 == "$s"* ]] && return 0; done
    return 1
}
row() { # row NAME RC SECONDS VALUE EXPECTED TOK_S VS_TORCH NOTE JSON
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$SUM"
}

# Tolerance of an expectation key: f32 results against the CPU's to float32 rounding of long
# sums; tf32 and bf16 (operands rounded to 10- and 7-bit mantissas) to the 2e-3 bpb the
# challenge's numbers vary by; trained losses looser, since three steps amplify the rounding.
tolerance() {
    case $1 in
    *.tf32) case $1 in *train3*) echo 1e-2 ;; *) echo 2e-3 ;; esac ;;
    *.bf16) case $1 in *train3*) echo 2e-2 ;; *) echo 2e-3 ;; esac ;;
    *train3*) echo 1e-4 ;;
    *ttt64*) echo 5e-5 ;;
    *.wgpu) echo 1e-4 ;;
    *) echo 1e-5 ;;
    esac
}

# run_stage NAME NEED_S MAX_S KEY TORCH_REF -- CMD...
#   KEY: expectation key (its value compared with the stage's val_bpb, or its train loss); "-"
#   for none. TORCH_REF: the TORCH entry whose tokens/s the stage's is compared with; "-" for
#   none. In the expectation mode only stages with a KEY run, on the CPU, in f32.
run_stage() {
    local name=$1 need=$2 max=$3 key=$4 tref=$5
    shift 6
    wanted "$name" || return 0
    if [ "$EXPECT_MODE" = 1 ]; then
        if [ "$key" = - ] || [[ $key == *.tf32 ]] || [[ $key == *.bf16 ]] || [[ $key == *.wgpu ]]; then
            return 0
        fi
        if [[ " ${GPU_CHECK_EXPECT_SKIP:-} " == *" $name "* ]]; then
            echo "[gpu-check] expectation of $name not computed (GPU_CHECK_EXPECT_SKIP)"
            return 0
        fi
    fi
    if [ -n "$STOP" ]; then
        echo "[gpu-check] SKIP $name: $STOP"
        row "$name" skip 0 - - - - "$STOP" -
        SKIPPED=$((SKIPPED + 1))
        return 0
    fi
    local l
    l=$(left)
    if [ "$l" -lt "$need" ]; then
        echo "[gpu-check] SKIP $name at +$(now)s: ${l}s left, it needs ${need}s"
        row "$name" skip 0 - - - - "no time: ${l}s left of ${DEADLINE}s" -
        SKIPPED=$((SKIPPED + 1))
        return 0
    fi
    local t=$((max < l ? max : l))
    # Expectations are computed on the CPU, where the GPU's timeouts mean nothing.
    [ "$EXPECT_MODE" = 1 ] && t=$l
    echo "[gpu-check] START $name at +$(now)s (timeout ${t}s): $*"
    local s0=${EPOCHREALTIME/,/.}
    if declare -F "$1" >/dev/null; then
        # A stage written as a function of this script: `timeout` runs it in a child bash
        # (the function and the variables it reads are exported below).
        timeout -k 5 "$t" bash -c "$*" 2>&1 | tee "$WORK/out"
    else
        timeout -k 5 "$t" "$@" 2>&1 | tee "$WORK/out"
    fi
    local rc=${PIPESTATUS[0]}
    local secs
    secs=$(awk -v a="${EPOCHREALTIME/,/.}" -v b="$s0" 'BEGIN { printf "%.1f", a - b }')
    local note=""
    if [ "$rc" -eq 0 ] && grep -q 'SKIPPED' "$WORK/out"; then
        rc=86
        note="printed SKIPPED (counted as a failure)"
    fi
    local json value="-" exp="-" tps="-" vs="-"
    json=$(grep '^{' "$WORK/out" | tail -1)
    if [ -n "$json" ]; then
        # A training run is held to its last step's loss, an evaluation to its val_bpb.
        if [ "$(jfield "$json" final)" = true ]; then
            value=$(jfield "$json" train_loss)
        else
            value=$(jfield "$json" val_bpb)
        fi
        [ -z "$value" ] && value="-"
        tps=$(jfield "$json" tokens_per_s | awk '{ printf "%.0f", $1 }')
        [ -z "$tps" ] && tps=$(awk -v t="$(jfield "$json" tokens)" -v s="$(jfield "$json" seconds)" \
            'BEGIN { if (t > 0 && s > 0) printf "%.0f", t / s; else print "-" }')
    fi
    if [ "$EXPECT_MODE" = 1 ]; then
        if [ "$rc" -eq 0 ] && [ "$value" != - ]; then
            local tol
            tol=$(tolerance "$KEYP$key")
            printf '%s\t%s\t%s\t%s\n' "$KEYP$key" "$value" "$tol" "stage $name (cpu, f32)" >>"$OUT/expect.tsv"
            # The same value is what tf32, bf16 and wgpu are held to, with their own tolerances.
            for v in tf32 bf16 wgpu; do
                case "$name:$v" in
                eval-slide-*:tf32 | train3-*:tf32 | eval-slide-*:bf16 | full-slide-*:bf16 | train3-*:bf16 | smoke:wgpu)
                    printf '%s\t%s\t%s\t%s\n' "$KEYP$key.$v" "$value" "$(tolerance "$KEYP$key.$v")" \
                        "stage $name (cpu, f32)" >>"$OUT/expect.tsv"
                    ;;
                esac
            done
        else
            FAIL=1
        fi
        echo "[gpu-check] EXPECT $name: $KEYP$key = $value (rc=$rc, ${secs}s)"
        return "$rc"
    fi
    if [ "$key" != - ] && [ "$rc" -eq 0 ]; then
        local e
        e=$(expect "$KEYP$key")
        if [ -z "$e" ]; then
            note="${note:+$note; }no expectation $KEYP$key in scripts/gpu-expect.tsv"
        elif [ "$value" = - ]; then
            rc=87
            note="${note:+$note; }no value to compare with $KEYP$key"
        else
            exp=${e% *}
            local tol=${e#* }
            if awk -v v="$value" -v x="$exp" -v t="$tol" 'BEGIN { d = v - x; if (d < 0) d = -d; exit !(d <= t) }'; then
                note="${note:+$note; }$(awk -v v="$value" -v x="$exp" -v t="$tol" 'BEGIN { printf "diff %+.2e (tol %g)", v - x, t }')"
            else
                rc=87
                note="${note:+$note; }$(awk -v v="$value" -v x="$exp" -v t="$tol" 'BEGIN { printf "OFF: diff %+.2e > tol %g", v - x, t }')"
            fi
        fi
    fi
    if [ "$tref" != - ] && [ -n "${TORCH[$tref]:-}" ] && [ "$tps" != - ]; then
        vs=$(awk -v a="$tps" -v b="${TORCH[$tref]}" 'BEGIN { printf "%.2fx", a / b }')
    fi
    if [ "$rc" != 0 ]; then FAIL=1; fi
    echo "[gpu-check] END $name at +$(now)s: rc=$rc ${secs}s value=$value expected=$exp tokens/s=$tps vs_torch=$vs ${note}"
    row "$name" "$rc" "$secs" "$value" "$exp" "$tps" "$vs" "${note:--}" "${json:--}"
    return "$rc"
}

# The PyTorch stages: each JSON line of the script becomes one TORCH entry.
run_torch() { # run_torch NAME NEED MAX TREF -- ARGS...
    local name=$1 need=$2 max=$3 tref=$4
    shift 5
    wanted "$name" || return 0
    [ "$EXPECT_MODE" = 1 ] && return 0
    if [ "$DRY" = 1 ]; then
        echo "[gpu-check] DRY $name: PyTorch timing is not run in the dry run"
        row "$name" dry 0 - - - - "dry run: PyTorch timing not run" -
        return 0
    fi
    run_stage "$name" "$need" "$max" - - -- env PYTHONUNBUFFERED=1 python3 "$ROOT/scripts/torch_gpu_bench.py" "$@"
    local rc=$?
    local json
    json=$(grep '^{' "$WORK/out" | tail -1)
    if [ "$rc" -eq 0 ] && [ -n "$json" ]; then
        local v
        v=$(jfield "$json" tokens_per_s)
        [ -n "$v" ] && TORCH[$tref]=$v && echo "[gpu-check] PyTorch $tref: $v tokens/s"
    fi
    return "$rc"
}

# What the stage functions below read, for the child shells `timeout` runs them in.
export DRY ROOT B FILTER PG REF VAL TOK
echo "== gpu-check $(date -u +%FT%TZ) (deadline ${DEADLINE}s, dry run: $DRY, out: $OUT)"
cat "$B/BUILD_INFO" 2>/dev/null | head -3

# ---- (a) environment
env_stage() {
    date -u +%FT%TZ
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw,temperature.gpu --format=csv
        nvidia-smi | head -12
    else
        echo "no nvidia-smi on this machine"
    fi
    lscpu 2>/dev/null | grep -E 'Model name|^CPU\(s\)' || true
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    ldconfig -p 2>/dev/null | grep -E 'lib(cuda|nvrtc|cublas|cublasLt|nccl|vulkan)\.so' | head -12 || true
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>/dev/null || echo "no PyTorch here"
    "$PG" devices --json
}
export -f env_stage
run_stage env 5 60 - - -- env_stage

# ---- (b) smoke: 2 windows, launch-blocking, f32
SMOKE_ARGS=(--max-tokens 2049)
[ "$DRY" = 1 ] && SMOKE_ARGS=(--max-tokens 257 --seq-len 128)
if ! CUDA_LAUNCH_BLOCKING=1 run_stage smoke 20 180 smoke.baseline9L - -- \
    "$PG" eval --backend "$BACKEND" --precision f32 --json --artifact "$REF/baseline9L_int8_zlib.ptz" \
    --data "$VAL" --tokenizer "$TOK" "${SMOKE_ARGS[@]}"; then
    if wanted smoke; then
        CUDA_LAUNCH_BLOCKING=1 run_stage smoke-ops 10 120 - - -- "$B/bin/cuda_parity" --nocapture --test-threads=1 \
            "${FILTER}upload_download_copy_roundtrip" "${FILTER}linear_matches" "${FILTER}norms_mixes_and_adds" \
            "${FILTER}attention_causal_gqa_xsa" "${FILTER}head_nll_and_log_probs"
        STOP="the smoke stage failed"
    fi
fi

# ---- (c) op parity
PARITY_ARGS=("$FILTER")
[ "$DRY" = 1 ] && PARITY_ARGS=("${FILTER}linear_matches" "${FILTER}attention_causal_gqa_xsa" "${FILTER}head_nll_and_log_probs")
run_stage op-parity 30 240 - - -- "$B/bin/cuda_parity" --nocapture --test-threads=1 "${PARITY_ARGS[@]}"
BF_ARGS=("$FILTER")
[ "$DRY" = 1 ] && BF_ARGS=("${FILTER}products_round_operands_to_bf16" "${FILTER}names_its_precision")
run_stage bf16-parity 20 180 - - -- "$B/bin/cuda_bf16" --nocapture --test-threads=1 "${BF_ARGS[@]}"

# ---- (d) speed probes: PyTorch first (the reference), then pgolf-rt
SLIDE_N=131073 # 131,072 sliding targets (stride 64, seq 1024)
EV=(--seq-len 1024)
[ "$DRY" = 1 ] && SLIDE_N=257 && EV=(--seq-len 64)
STD_ARGS=()
[ "$DRY" = 1 ] && STD_ARGS=(--max-tokens 513)
run_torch torch-eval-slide 40 150 slide -- eval --artifact "$REF/baseline9L_int8_zlib.ptz" --data "$VAL" \
    --tokenizer "$TOK" --seq-len 1024 --stride 64 --max-tokens "$SLIDE_N" --batch 32 --pad-last
run_torch torch-eval-std 20 120 std -- eval --artifact "$REF/baseline9L_int8_zlib.ptz" --data "$VAL" \
    --tokenizer "$TOK" --seq-len 1024 --batch 32 --pad-last
for art in baseline9L_int8_zlib mlp3x11L_int6_zstd; do
    m=${art%%_*}
    tref=-
    [ "$m" = baseline9L ] && tref=std
    run_stage "eval-std-$m-f32" 15 120 "std.$m" "$tref" -- "$PG" eval --backend "$BACKEND" --precision f32 --json \
        --batch 32 --artifact "$REF/$art.ptz" --data "$VAL" --tokenizer "$TOK" "${EV[@]}" "${STD_ARGS[@]}"
done
# slide_stage PREC ART: the sliding eval over SLIDE_N targets (key slide.M, or slide.M.PREC).
slide_stage() {
    local prec=$1 art=$2 m=${2%%_*} tref=- key
    [ "$m" = baseline9L ] && tref=slide
    key="slide.$m"
    [ "$prec" != f32 ] && key="slide.$m.$prec"
    run_stage "eval-slide-$m-$prec" 15 120 "$key" "$tref" -- "$PG" eval --backend "$BACKEND" --precision "$prec" \
        --json --batch 32 --stride "$([ "$DRY" = 1 ] && echo 32 || echo 64)" --max-tokens "$SLIDE_N" \
        --artifact "$REF/$art.ptz" --data "$VAL" --tokenizer "$TOK" "${EV[@]}"
}
for prec in f32 bf16; do
    for art in baseline9L_int8_zlib mlp3x11L_int6_zstd; do
        slide_stage "$prec" "$art"
    done
done

# ---- (e) training steps of the baseline configuration
TRAIN_ENV=(ITERATIONS=3 WARMUP_STEPS=0 VAL_LOSS_EVERY=0 VAL_MAX_TOKENS=65536 TRAIN_LOG_EVERY=1
    MAX_WALLCLOCK_SECONDS=0)
if [ "$DRY" = 1 ]; then
    TRAIN_ENV+=(NUM_LAYERS=2 MODEL_DIM=64 NUM_HEADS=2 NUM_KV_HEADS=1 TRAIN_SEQ_LEN=64
        TRAIN_BATCH_TOKENS=512 GRAD_ACCUM_STEPS=2 VAL_MAX_TOKENS=1024)
fi
run_torch torch-train 60 200 train -- train --data-path "$S/data/text_sp1024" --steps 6 --max-seconds 150
# train3_stage PREC: three steps of the baseline configuration (key train3, or train3.PREC).
train3_stage() {
    local prec=$1 key=train3 dir="$WORK/train-$1"
    [ "$prec" != f32 ] && key=train3.$prec
    mkdir -p "$dir"
    run_stage "train3-$prec" 30 180 "$key" train -- env -C "$dir" "${TRAIN_ENV[@]}" \
        DATA_PATH="$S/data/text_sp1024" TOKENIZER_PATH="$TOK" "$PG" train --backend "$BACKEND" \
        --precision "$prec" --profile --json
}
for prec in f32 bf16; do
    train3_stage "$prec"
done

# ---- (f) training parity
TP_ARGS=("$FILTER")
[ "$DRY" = 1 ] && TP_ARGS=("${FILTER}linear_backward" "${FILTER}trainer_steps")
run_stage train-parity 30 240 - - -- "$B/bin/cuda_train_parity" --nocapture --test-threads=1 "${TP_ARGS[@]}"

# ---- (g) if time is left
for prec in f32 bf16; do
    key=fullslide.mlp3x11L
    [ "$prec" != f32 ] && key=fullslide.mlp3x11L.$prec
    FS=()
    [ "$DRY" = 1 ] && FS=(--max-tokens 513 --stride 32)
    run_stage "full-slide-mlp3x11L-$prec" 40 150 "$key" - -- "$PG" eval --backend "$BACKEND" --precision "$prec" \
        --json --batch 32 --sliding --artifact "$REF/mlp3x11L_int6_zstd.ptz" --data "$VAL" --tokenizer "$TOK" \
        "${EV[@]}" "${FS[@]}"
done
TTT=(--ttt-max-docs 64 --ttt-batch-docs 64)
[ "$DRY" = 1 ] && TTT=(--ttt-max-docs 1 --ttt-chunk 64 --ttt-window 128)
run_stage ttt-lora-f32 30 150 ttt64.baseline9L - -- "$PG" eval --backend "$BACKEND" --precision f32 --json \
    --ttt lora "${TTT[@]}" --artifact "$REF/baseline9L_int8_zlib.ptz" --data "$VAL" --tokenizer "$TOK"
wgpu_stage() {
    if [ "$DRY" != 1 ] && [ -d "$ROOT/.gl" ] && ! ldconfig -p | grep -q libvulkan; then
        for f in "$ROOT"/.gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    if [ "$DRY" != 1 ] && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
    local w=(--max-tokens 2049)
    [ "$DRY" = 1 ] && w=(--max-tokens 257 --seq-len 128)
    "$PG" eval --backend wgpu --json --artifact "$REF/baseline9L_int8_zlib.ptz" --data "$VAL" --tokenizer "$TOK" "${w[@]}"
}
export -f wgpu_stage
run_stage wgpu-vulkan 30 120 smoke.baseline9L.wgpu - -- wgpu_stage
sanitizer_stage() {
    if [ "$DRY" = 1 ] || ! command -v compute-sanitizer >/dev/null; then
        echo "compute-sanitizer is not here: running the test without it"
        "$B/bin/cuda_parity" --nocapture --test-threads=1 "${FILTER}attention_on_tensor_cores"
    else
        compute-sanitizer --tool memcheck --error-exitcode 99 "$B/bin/cuda_parity" --nocapture --test-threads=1 \
            "${FILTER}attention_on_tensor_cores"
    fi
}
export -f sanitizer_stage
run_stage sanitizer 40 150 - - -- sanitizer_stage
slide_stage tf32 baseline9L_int8_zlib
train3_stage tf32

echo
echo "== gpu-check summary (+$(now)s; PyTorch: bf16 autocast + torch.compile on this GPU; vs_torch: tokens/s ratio, higher is better)"
column -t -s $'\t' <(cut -f1-8 "$SUM") 2>/dev/null || cut -f1-8 "$SUM"
echo "results: $LOG, $SUM"
if [ $FAIL -ne 0 ]; then
    echo "gpu-check: FAILURES (see the rc column)"
    exit 1
elif [ $SKIPPED -ne 0 ]; then
    echo "gpu-check: INCOMPLETE: $SKIPPED stages skipped (no failures among those that ran)"
    exit 3
fi
echo "gpu-check: PASS"
