#!/usr/bin/env bash
# Second evidence grid (same conditions, data, seeds and hyper-parameters as evidence_ml.sh):
# AutoLoss with the per-example loss history, first-order and unrolled, and mixtures over the
# bounded candidates only (ce, gce, mae). Usage: bash benchmarks/evidence_ml2.sh OUT_DIR [SEEDS]
set -euo pipefail
OUT=${1:?output directory}
SEEDS=${2:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
COMMON=(--models deepfm --seeds "$SEEDS" --epochs 10 --threads 1 --jobs 2 --set train.log_every=20)
for c in clean sym30 p2n30; do
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} "${HISTORY[@]}" --methods autoloss --out "$OUT/$c-history"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} "${HISTORY[@]}" --methods autoloss --set loss.mode=unrolled \
    --out "$OUT/$c-historyunrolled"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods uniform,darts,autoloss \
    --set loss.candidates=ce,gce,mae --out "$OUT/$c-bounded"
done
