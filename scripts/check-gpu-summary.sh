#!/usr/bin/env bash
# Checks a summary.tsv written by scripts/gpu-check.sh: every stage of `gpu-check.sh
# --list-stages` has at least one row, and every row passed (rc 0; with --dry, the PyTorch
# rows may say "dry", since the dry run does not time PyTorch). Prints the failing rows and
# exits non-zero otherwise. CI runs it on the dry run's summary.
#   scripts/check-gpu-summary.sh SUMMARY.tsv [--dry]
set -euo pipefail
cd "$(dirname "$0")/.."
sum=${1:?usage: check-gpu-summary.sh SUMMARY.tsv [--dry]}
dry=${2:-}
bad=0
while read -r stage; do
    n=$(awk -F'\t' -v s="$stage" 'NR > 1 && index($1, s) == 1' "$sum" | wc -l)
    if [ "$n" -eq 0 ]; then
        echo "check-gpu-summary: no row for stage $stage" >&2
        bad=1
    fi
done < <(bash scripts/gpu-check.sh --list-stages)
while IFS=$'\t' read -r stage rc secs value expected tps vs note json; do
    if [ "$rc" = 0 ]; then continue; fi
    if [ "$dry" = --dry ] && [ "$rc" = dry ] && [[ $stage == torch-* ]]; then continue; fi
    echo "check-gpu-summary: $stage: rc=$rc ($note)" >&2
    bad=1
done < <(tail -n +2 "$sum")
[ $bad -eq 0 ] && echo "check-gpu-summary: every stage has a row and passed ($(($(wc -l <"$sum") - 1)) rows)"
exit $bad
