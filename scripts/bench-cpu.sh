#!/usr/bin/env bash
# CPU forward throughput: PyTorch eager float32 (scripts/bench_torch_cpu.py) next to the Rust criterion
# benchmark (cargo bench -p pgolf-rt --bench cpu_forward), with the ratio Rust / PyTorch.
#
# Usage: scripts/bench-cpu.sh [--threads N] [--torch-only] [--rust-only]
#   --threads N   torch.set_num_threads(N) and RAYON_NUM_THREADS=N for the Rust side (default: each one's default)
#   --torch-only  skip the Rust benchmark
#   --rust-only   skip the PyTorch benchmark
# Env: VENV (default <repo>/venv), PYTHON (python used to create the venv, default python3),
#      PGOLF_SHARED (folder holding reference/ and data/, default <repo>/shared or <repo>/../shared).
#
# The Rust benchmark must print lines `rust_cpu_tokens_per_s <batch> <tokens/s>` (stdout or stderr),
# and `rust_cpu_bf16_tokens_per_s <batch> <tokens/s>` for --precision bf16 where the CPU has a bf16
# kernel (AMX-BF16 or AVX512-BF16; the table then has a bf16 column, else says why not).

set -euo pipefail

die() { echo "bench-cpu: error: $*" >&2; exit 1; }
note() { echo "bench-cpu: $*" >&2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/venv}"
PYTHON="${PYTHON:-python3}"
THREADS=""
RUN_TORCH=1
RUN_RUST=1

while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) [[ $# -ge 2 ]] || die "--threads needs a value"; THREADS="$2"; shift 2 ;;
    --threads=*) THREADS="${1#*=}"; shift ;;
    --torch-only) RUN_RUST=0; shift ;;
    --rust-only) RUN_TORCH=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done
if [[ -n "$THREADS" && ! "$THREADS" =~ ^[1-9][0-9]*$ ]]; then die "--threads must be a positive integer, got '$THREADS'"; fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-cpu.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
: > "$WORK/torch.txt"
: > "$WORK/rust.txt"
: > "$WORK/bf16.txt"

# ---------------------------------------------------------------- PyTorch
if [[ $RUN_TORCH -eq 1 ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null || die "no $PYTHON to create the venv with"
    note "creating venv at $VENV (torch from PyPI pulls CUDA wheels, ~5 GB)"
    "$PYTHON" -m venv "$VENV" || die "python -m venv failed"
  fi
  if ! "$VENV/bin/python" -c 'import torch, numpy, zstandard, sentencepiece' 2>/dev/null; then
    note "installing torch numpy zstandard sentencepiece==0.2.3 into $VENV"
    "$VENV/bin/pip" install -q torch numpy zstandard sentencepiece==0.2.3 || die "pip install failed"
  fi
  TORCH_ARGS=()
  [[ -n "$THREADS" ]] && TORCH_ARGS+=(--threads "$THREADS")
  note "running PyTorch benchmark (scripts/bench_torch_cpu.py ${TORCH_ARGS[*]:-})"
  if ! "$VENV/bin/python" "$REPO/scripts/bench_torch_cpu.py" "${TORCH_ARGS[@]}" > "$WORK/torch.out"; then
    die "scripts/bench_torch_cpu.py failed (see messages above)"
  fi
  cat "$WORK/torch.out"
  awk '$1 == "torch_cpu_tokens_per_s" { v[$2] = $3 } END { for (b in v) print b, v[b] }' "$WORK/torch.out" \
    | sort -n > "$WORK/torch.txt"
  [[ -s "$WORK/torch.txt" ]] || die "PyTorch benchmark printed no torch_cpu_tokens_per_s lines"
fi

# ---------------------------------------------------------------- Rust
RUST_FAILED=0
if [[ $RUN_RUST -eq 1 ]]; then
  command -v cargo >/dev/null || die "cargo not found in PATH"
  note "running Rust benchmark (cargo bench -p pgolf-rt --bench cpu_forward)"
  set +e
  (
    cd "$REPO"
    if [[ -n "$THREADS" ]]; then export RAYON_NUM_THREADS="$THREADS"; fi
    cargo bench -p pgolf-rt --bench cpu_forward
  ) 2>&1 | tee "$WORK/rust.out"
  rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc -ne 0 ]]; then
    note "cargo bench exited with status $rc"
    RUST_FAILED=1
  fi
  # last value printed for each batch size wins
  awk '{ for (i = 1; i + 2 <= NF; i++) if ($i == "rust_cpu_tokens_per_s") v[$(i+1)] = $(i+2) }
       END { for (b in v) print b, v[b] }' "$WORK/rust.out" | sort -n > "$WORK/rust.txt"
  awk '{ for (i = 1; i + 2 <= NF; i++) if ($i == "rust_cpu_bf16_tokens_per_s") v[$(i+1)] = $(i+2) }
       END { for (b in v) print b, v[b] }' "$WORK/rust.out" | sort -n > "$WORK/bf16.txt"
  if [[ ! -s "$WORK/rust.txt" ]]; then
    note "the Rust benchmark printed no 'rust_cpu_tokens_per_s <batch> <value>' lines"
    RUST_FAILED=1
  fi
fi

# ---------------------------------------------------------------- table
echo
echo "CPU forward throughput, seq 1024 (tokens/s; threads: ${THREADS:-default})"
echo "CPU: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
grep -h 'rust_cpu_backend\|rust_cpu_bf16_unavailable' "$WORK/rust.out" 2>/dev/null | sed 's/^/  /' || true
join -a1 -a2 -e NA -o 0,1.2,2.2 <(sort -k1,1 "$WORK/torch.txt") <(sort -k1,1 "$WORK/rust.txt") \
  | sort -k1,1 | join -a1 -e NA -o 0,1.2,1.3,2.2 - <(sort -k1,1 "$WORK/bf16.txt") | sort -n \
  | awk 'function ratio(a, b) { return (a != "NA" && b != "NA" && b > 0) ? sprintf("%.2fx", a / b) : "n/a" }
         BEGIN { printf "%-6s %14s %14s %14s %12s %12s\n", "batch", "pytorch f32", "rust f32", "rust bf16", "f32/torch", "bf16/torch" }
         { printf "%-6s %14s %14s %14s %12s %12s\n", $1, $2, $3, $4, ratio($3, $2), ratio($4, $2) }'

if [[ $RUST_FAILED -eq 1 ]]; then
  die "Rust benchmark failed or produced no numbers (table shows NA)"
fi
