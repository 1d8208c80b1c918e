#!/usr/bin/env bash
# Evidence on Frappe_x1 under class imbalance (DeepFM, the paper configuration, 30 epochs max with
# early stopping): the positives of every split subsampled to a positive rate of 5% and 2%
# (data.pos_rate; the test split keeps its negatives, so AUC stays comparable). The single losses
# made for sparse positives (focal), the fixed uniform mixture, AutoLoss
# and its best variant. Usage: bash benchmarks/evidence_imbalance.sh DATA OUT [SEEDS]
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
frappe_common "$DATA" "$SEEDS" "${JOBS:-1}"
for rate in 05 02; do
  c="pos$rate"
  $AL compare "${COMMON[@]}" --set "data.pos_rate=0.$rate" \
    --methods ce,focal,uniform,autoloss --out "$OUT/$c-methods"
  $AL compare "${COMMON[@]}" --set "data.pos_rate=0.$rate" "${HIST[@]}" --methods autoloss \
    --out "$OUT/$c-historyunrolled"
done
