#!/usr/bin/env bash
# Evidence on Frappe_x1 at other symmetric noise rates (20%, 40%) and missed clicks (30% pos2neg),
# each with a clean validation split and with the validation split as noisy as the training split
# (no clean data but the test); symmetric 30% with noisy validation (the clean-validation case is
# in evidence_frappe.sh). DeepFM, the
# paper configuration, 30 epochs at most, the same settings for every method.
# Usage: bash benchmarks/evidence_noise_rates.sh DATA OUT [SEEDS]   (tables: evidence_table.py OUT)
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
frappe_common "$DATA" "$SEEDS" "${JOBS:-1}"
COMMON+=(--set data.noise_mode=symmetric --methods ce,gce,uniform,autoloss)
$AL compare "${COMMON[@]}" --set data.label_noise=0.2 --set data.noise_on_valid=false \
  --out "$OUT/sym20-methods"
$AL compare "${COMMON[@]}" --set data.label_noise=0.4 --set data.noise_on_valid=false \
  --out "$OUT/sym40-methods"
$AL compare "${COMMON[@]}" --set data.label_noise=0.3 --set data.noise_on_valid=true \
  --out "$OUT/sym30noisyvalid-methods"
$AL compare "${COMMON[@]}" --set data.label_noise=0.2 --set data.noise_on_valid=true \
  --out "$OUT/sym20noisyvalid-methods"
$AL compare "${COMMON[@]}" --set data.label_noise=0.4 --set data.noise_on_valid=true \
  --out "$OUT/sym40noisyvalid-methods"
$AL compare "${COMMON[@]}" --set data.label_noise=0.3 --set data.noise_mode=pos2neg \
  --set data.noise_on_valid=true --out "$OUT/p2n30noisyvalid-methods"
