#!/usr/bin/env bash
# The rest of the method list on Frappe_x1 (evidence_frappe.sh, evidence_noise_rates.sh and
# evidence_imbalance.sh have ce, gce, mae, uniform, autoloss and the variants): label smoothing
# (kl), truncated CE (tce), SLF, CE selected by validation logloss, AutoLoss/DARTS unrolled and
# AutoLoss over the robust candidates, under each condition of CONDITIONS (default sym30; any of
# clean, sym30, sym40, p2n30, pos05, pos02; noisy labels with a clean validation split). Write into
# the OUT that holds the condition's ce: the tables pair every method with its ce.
# Usage: bash benchmarks/evidence_frappe_methods.sh DATA OUT [SEEDS] [CONDITIONS]
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
CONDITIONS=${4:-sym30}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
frappe_common "$DATA" "$SEEDS" "${JOBS:-2}"
for c in ${CONDITIONS//,/ }; do
  [[ -v COND[$c] ]] || { echo "unknown condition $c" >&2; exit 2; }
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods kl,tce,slf --out "$OUT/$c-more"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods ce --set train.select_by=logloss \
    --out "$OUT/$c-celogloss"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods autoloss,darts --set loss.mode=unrolled \
    --out "$OUT/$c-unrolled"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods autoloss \
    --set loss.candidates=focal,kl,hinge,ce,gce,mae,tce --out "$OUT/$c-robust"
done
