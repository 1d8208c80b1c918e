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
AL=${AUTOLOSS:-autoloss}
COMMON=(--data "$DATA" --models deepfm --seeds "$SEEDS" --epochs 30 --threads 1 --jobs "${JOBS:-1}"
  --set train.log_every=20)
HIST=(--set loss.candidates=focal,kl,hinge,ce,gce,mae,tce
  --set loss.controller_inputs=label,prediction,losses,margin,progress,history
  --set loss.tau_anneal=1.0 --set loss.mode=unrolled)
for rate in 05 02; do
  c="pos$rate"
  $AL compare "${COMMON[@]}" --set "data.pos_rate=0.$rate" \
    --methods ce,focal,uniform,autoloss --out "$OUT/$c-methods"
  $AL compare "${COMMON[@]}" --set "data.pos_rate=0.$rate" "${HIST[@]}" --methods autoloss \
    --out "$OUT/$c-historyunrolled"
done
