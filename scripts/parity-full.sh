#!/usr/bin/env bash
# Full-shard parity with PyTorch, including sliding-window eval at stride 64 (about 16x the
# work of standard eval: over an hour on a 2-core machine, so not part of CI).
# Usage: scripts/parity-full.sh   (needs ../shared beside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p pgolf-rt --test eval_reference -- --include-ignored --nocapture --test-threads 1
