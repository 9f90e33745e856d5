#!/usr/bin/env bash
# `pgolf-rt train` with each seed submission's hyper-parameters (at the tiny size of its
# fixture, scripts/seed_fixtures.py's presets), then the PR's own loader reads the exported
# artifact strictly and its own forward scores it as `pgolf-rt eval` does
# (scripts/check_seed_load.py).
#
#   scripts/seed-train-check.sh PRS_DIR [PYTHON]
#
# PRS_DIR holds each PR's train_gpt.py as PRS_DIR/<pr>/records/x/train_gpt.py (the depth its
# Hyperparameters' default LOG_DIR needs), fetched from openai/parameter-golf
# refs/pull/<pr>/head. PYTHON needs torch, numpy, sentencepiece and zstandard. DATA_DIR
# (default ../shared/data) holds text_sp1024/ and tokenizers/. Needs a release build of pgolf-rt
# (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
prs=${1:?usage: scripts/seed-train-check.sh PRS_DIR [PYTHON]}
py=${2:-python3}
data=${DATA_DIR:-../shared/data}
bin=target/release/pgolf-rt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
val="$data/text_sp1024/fineweb_val_000000.bin"
common=(ITERATIONS=30 WARMDOWN_ITERS=10 WARMUP_STEPS=0 TRAIN_BATCH_TOKENS=8192 TRAIN_SEQ_LEN=256
  VAL_MAX_TOKENS=16385 NUM_LAYERS=4 NUM_HEADS=2 NUM_KV_HEADS=1 SMEAR_GATE=1
  DATA_PATH="$data/text_sp1024" TOKENIZER_PATH="$data/tokenizers/pg_sp1024_bpe.model")

# pr | export | training hyper-parameters (the PR's names and its defaults for the optimizers,
# their groups included: BIGRAM_*/VE_PROJ_OPTIMIZER) | what `pgolf-rt eval` must be told
runs=(
  "489|int8|MODEL_DIM=64 MLP_MULT=3 LOGIT_SOFTCAP=15 ROPE_DIMS=16 BIGRAM_VOCAB_SIZE=512 BIGRAM_DIM=32 QK_GAIN_INIT=1.0 TIED_EMBED_LR=0.01 MATRIX_LR=0.03 SCALAR_LR=0.04 MUON_MOMENTUM=0.99 MUON_MOMENTUM_WARMUP_START=0.85 MUON_MOMENTUM_WARMUP_STEPS=500 MUON_WD=0.04 ADAM_WD=0 GRAD_CLIP_NORM=0 BIGRAM_PROJ_OPTIMIZER=muon BIGRAM_EMBED_OPTIMIZER=muon EMA_DECAY=0|--rope-dims 16 --softcap 15"
  "581|int6|MODEL_DIM=64 MLP_MULT=3 ROPE_DIMS=16 LN_SCALE=1 BIGRAM_VOCAB_SIZE=512 BIGRAM_DIM=32 SPARSE_HIDDEN_DIM=16 SPARSE_START_LAYER=1 ORTHO_INIT=1 TIED_EMBED_LR=0.035 MATRIX_LR=0.025 SCALAR_LR=0.025 MUON_MOMENTUM=0.99 MUON_MOMENTUM_WARMUP_START=0.92 MUON_MOMENTUM_WARMUP_STEPS=1500 MUON_WD=0.04 ADAM_WD=0.04 GRAD_CLIP_NORM=0.3 BIGRAM_PROJ_OPTIMIZER=muon EMA_DECAY=0.997|--rope-dims 16 --ln-scale"
  "687|int6|MODEL_DIM=32 MLP_MULT=3.5 ROPE_DIMS=8 LN_SCALE=1 XSA_LAST_N=4 ACTIVATION=leaky_relu2 BIGRAM_VOCAB_SIZE=256 BIGRAM_DIM=16 VE_LAYERS=2 VE_DIM=8 ORTHO_INIT=1 TIED_EMBED_LR=0.035 MATRIX_LR=0.025 SCALAR_LR=0.025 MUON_MOMENTUM=0.99 MUON_MOMENTUM_WARMUP_START=0.92 MUON_MOMENTUM_WARMUP_STEPS=1500 MUON_WD=0.04 ADAM_WD=0.04 GRAD_CLIP_NORM=0.3 BIGRAM_PROJ_OPTIMIZER=muon VE_PROJ_OPTIMIZER=muon EMA_DECAY=0.997|--rope-dims 8 --ln-scale --xsa-last 4 --activation leaky_relu2"
)
status=0
for run in "${runs[@]}"; do
  IFS='|' read -r pr export hp evalargs <<<"$run"
  out="$work/pr$pr.ptz"
  echo "== PR #$pr: pgolf-rt train ($hp), --export $export"
  # shellcheck disable=SC2086
  env "${common[@]}" $hp "$bin" train --export "$export" --out "$out" | tail -2
  # shellcheck disable=SC2086
  loss=$("$bin" eval --artifact "$out" --data "$val" \
    --tokenizer "$data/tokenizers/pg_sp1024_bpe.model" --seq-len 256 --max-tokens 4097 \
    $evalargs --json | tail -1 | "$py" -c 'import json,sys; print(json.load(sys.stdin)["val_loss"])')
  echo "pgolf-rt eval: val_loss $loss"
  if ! "$py" scripts/check_seed_load.py --pr "$pr" --code "$prs/$pr/records/x/train_gpt.py" \
    --artifact "$out" --val "$val" --seq 256 --tokens 4096 --expect-loss "$loss"; then
    echo "PR #$pr: FAILED"
    status=1
  fi
done
exit $status
