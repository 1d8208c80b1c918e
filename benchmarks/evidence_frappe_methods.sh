#!/usr/bin/env bash
# The rest of the method list on Frappe_x1 under 30% symmetric noise with a clean validation split
# (evidence_frappe.sh has ce, gce, mae, uniform, autoloss and the variants): label smoothing (kl),
# truncated CE (tce), SLF, CE selected by validation logloss, and AutoLoss/DARTS unrolled. Write
# into the same OUT as evidence_frappe.sh: the tables pair every method with its ce.
# Usage: bash benchmarks/evidence_frappe_methods.sh DATA OUT [SEEDS]
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
frappe_common "$DATA" "$SEEDS" "${JOBS:-2}"
COMMON+=(--set data.label_noise=0.3 --set data.noise_mode=symmetric --set data.noise_on_valid=false)
$AL compare "${COMMON[@]}" --methods kl,tce,slf --out "$OUT/sym30-more"
$AL compare "${COMMON[@]}" --methods ce --set train.select_by=logloss --out "$OUT/sym30-celogloss"
$AL compare "${COMMON[@]}" --methods autoloss,darts --set loss.mode=unrolled \
  --out "$OUT/sym30-unrolled"
