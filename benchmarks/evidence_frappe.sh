#!/usr/bin/env bash
# Evidence on Frappe_x1 (DeepFM, the paper configuration, 30 epochs max with early stopping): the
# methods that mattered on ml-latest-small, under clean labels, 30% symmetric noise and 30% missed
# clicks with a clean validation split. Usage: bash benchmarks/evidence_frappe.sh DATA OUT [SEEDS]
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
AL=${AUTOLOSS:-autoloss}
COMMON=(--data "$DATA" --models deepfm --seeds "$SEEDS" --epochs 30 --threads 1 --jobs 2
  --set train.log_every=20)
HIST=(--set loss.candidates=focal,kl,hinge,ce,gce,mae,tce
  --set loss.controller_inputs=label,prediction,losses,margin,progress,history
  --set loss.tau_anneal=1.0 --set loss.mode=unrolled)
declare -A COND=(
  [clean]=""
  [sym30]="--set data.label_noise=0.3 --set data.noise_mode=symmetric --set data.noise_on_valid=false"
  [p2n30]="--set data.label_noise=0.3 --set data.noise_mode=pos2neg --set data.noise_on_valid=false"
)
for c in sym30 p2n30 clean; do
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods ce,gce,mae,uniform,autoloss --out "$OUT/$c-methods"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods uniform,darts --set loss.candidates=ce,gce,mae \
    --out "$OUT/$c-bounded"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} "${HIST[@]}" --methods autoloss --out "$OUT/$c-historyunrolled"
done
