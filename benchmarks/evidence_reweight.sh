#!/usr/bin/env bash
# The pre-registered protocol of `--loss reweight` (docs/method.md, "Per-example weights"):
#   dev    the development condition (Frappe_x1, 30% symmetric noise on train, clean validation):
#          the hyper-parameter candidates, 3 seeds, chosen by mean *selection-split* AUC
#   main   every condition of the evidence, 10 paired seeds: the fixed losses, reweight with the
#          frozen choice, AutoLoss (exploratory) in <cond>-methods, and the [ce+meta] control (CE
#          trained on train + the meta rows) in <cond>-cemeta
# Every method of every condition: the same data.meta_fraction (the meta rows: what learnt
# policies update on; the rest of the validation split selects for every method).
#   ml / frappe  the conditions of one dataset only (main = both)
# Usage: bash benchmarks/evidence_reweight.sh dev|main|ml|frappe FRAPPE_DATA OUT [SEEDS]
#        python benchmarks/evidence_table.py OUT --primary reweight --development dev
set -euo pipefail
WHAT=${1:?dev or main}
FRAPPE=${2:?prepared Frappe_x1 directory}
OUT=${3:?output directory}
SEEDS=${4:-10}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
META=(--set data.meta_fraction=0.5)
FIXED=ce,focal,kl,hinge,gce,mae

frappe() {  # frappe NAME CONDITION-OPTIONS...
  local name=$1
  shift
  COMMON=(--data "$FRAPPE" --seeds "$SEEDS" --epochs 30 --threads 1 --jobs "${JOBS:-2}"
    --set train.log_every=20 "${META[@]}")
  run_condition "$name" deepfm "$@"
}

ml() {  # ml NAME DATA CONDITION-OPTIONS...
  local name=$1 data=$2
  shift 2
  COMMON=(--data "$data" --seeds "$SEEDS" --epochs 10 --threads 1 --jobs "${JOBS:-2}"
    --set train.log_every=20 "${META[@]}")
  run_condition "$name" "${MODELS:-deepfm}" "$@"
}

run_condition() {  # run_condition NAME MODELS CONDITION-OPTIONS...
  local name=$1 models=$2
  shift 2
  $AL compare "${COMMON[@]}" --models "$models" "$@" --methods "$FIXED,reweight,autoloss" \
    --out "$OUT/$name-methods"
  $AL compare "${COMMON[@]}" --models "$models" "$@" --set data.meta_use=train --methods ce \
    --out "$OUT/$name-cemeta"
}

if [ "$WHAT" = dev ]; then
  # shellcheck disable=SC2086
  DEV=(--data "$FRAPPE" --models deepfm --seeds "$SEEDS" --epochs 30 --threads 1
    --jobs "${JOBS:-2}" --set train.log_every=20 "${META[@]}" ${COND[sym30]})
  CE=(--set loss.reweight_candidates=ce)
  PAPER=(--set loss.reweight_candidates=focal,kl,hinge,ce)
  $AL compare "${DEV[@]}" --methods ce --out "$OUT/dev-methods"
  $AL compare "${DEV[@]}" --methods reweight "${CE[@]}" --out "$OUT/dev-ce"
  $AL compare "${DEV[@]}" --methods reweight "${PAPER[@]}" --out "$OUT/dev-paper"
  $AL compare "${DEV[@]}" --methods reweight "${CE[@]}" --set loss.reweight_update_every=7 \
    --out "$OUT/dev-ceevery7"
  $AL compare "${DEV[@]}" --methods reweight "${CE[@]}" --set loss.reweight_lr=1e-4 \
    --out "$OUT/dev-celr4"
  exit 0
fi

[ "$WHAT" = main ] || [ "$WHAT" = ml ] || [ "$WHAT" = frappe ] || { echo "dev, main, ml or frappe" >&2; exit 2; }
ML="$OUT/data/ml-binary"
IMPL="$OUT/data/ml-implicit"
TEMP="$OUT/data/ml-temporal"
[ -f "$ML/meta.json" ] || $AL prepare --format movielens --out "$ML"
[ -f "$IMPL/meta.json" ] || $AL prepare --format movielens --task implicit --out "$IMPL"
[ -f "$TEMP/meta.json" ] || $AL prepare --format movielens --split temporal --out "$TEMP"
# shellcheck disable=SC2086
if [ "$WHAT" != frappe ]; then
  ml mlclean "$ML"
  ml mlsym30 "$ML" ${COND[sym30]}
  ml mlp2n30 "$ML" ${COND[p2n30]}
  ml implicit "$IMPL" $CLEAN_VALID
  ml temporal "$TEMP"
  MODELS=ipnn ml ipnnmlsym30 "$ML" ${COND[sym30]}
  MODELS=ipnn ml ipnnimplicit "$IMPL" $CLEAN_VALID
fi
# shellcheck disable=SC2086
if [ "$WHAT" != ml ]; then
  COND[sym20]="--set data.label_noise=0.2 --set data.noise_mode=symmetric $CLEAN_VALID"
  for c in ${FRAPPE_CONDS:-clean sym20 sym40 p2n30 pos05}; do  # FRAPPE_CONDS: a subset
    frappe "$c" ${COND[$c]}
  done
fi
