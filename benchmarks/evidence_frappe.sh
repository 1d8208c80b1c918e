#!/usr/bin/env bash
# Evidence on Frappe_x1 (DeepFM, the paper configuration, 30 epochs max with early stopping): the
# methods that mattered on ml-latest-small, under clean labels, 30% symmetric noise and 30% missed
# clicks with a clean validation split. Usage: bash benchmarks/evidence_frappe.sh DATA OUT [SEEDS]
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
frappe_common "$DATA" "$SEEDS" 2
for c in sym30 p2n30 clean; do
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods ce,gce,mae,uniform,autoloss --out "$OUT/$c-methods"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods uniform,darts --set loss.candidates=ce,gce,mae \
    --out "$OUT/$c-bounded"
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} "${HIST[@]}" --methods autoloss --out "$OUT/$c-historyunrolled"
done
