#!/usr/bin/env bash
# First evidence grid for "where does loss search help?" on the embedded ml-latest-small (binary):
# clean labels, 30% symmetric noise and 30% missed clicks (pos2neg) on the training split with a
# clean validation split. Same hyper-parameters, validation data and seeds for every method.
# Usage: bash benchmarks/evidence_ml.sh OUT_DIR [SEEDS]   (then: autoloss report OUT_DIR/<cond>-*)
set -euo pipefail
OUT=${1:?output directory}
SEEDS=${2:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
COMMON=(--models deepfm --seeds "$SEEDS" --epochs 10 --threads 1 --jobs 2 --set train.log_every=20)
for c in clean sym30 p2n30; do
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods ce,kl,gce,mae,tce,uniform,darts,slf,autoloss \
    --out "$OUT/$c-methods"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods ce --set train.select_by=logloss \
    --out "$OUT/$c-ce-logloss"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods autoloss,darts --set loss.mode=unrolled \
    --out "$OUT/$c-unrolled"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods uniform,darts,autoloss \
    --set loss.candidates=focal,kl,hinge,ce,gce,mae,tce --out "$OUT/$c-robust"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods autoloss \
    --set loss.candidates=focal,kl,hinge,ce,gce,mae,tce \
    --set loss.controller_inputs=label,prediction,losses,margin,progress \
    --set loss.tau_anneal=1.0 --out "$OUT/$c-variant"
done
