#!/usr/bin/env bash
# IPNN on two conditions of the evidence (is what we see a DeepFM artefact?): ml-latest-small
# binary with 30% symmetric noise on train and a clean validation split, and ml-latest-small as
# implicit feedback with natural noise (run evidence_ml_protocols.sh first: it prepares the data).
# Usage: bash benchmarks/evidence_ipnn.sh OUT [SEEDS]   (OUT: the same as evidence_ml_protocols.sh)
set -euo pipefail
OUT=${1:?output directory}
SEEDS=${2:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
COMMON=(--models ipnn --seeds "$SEEDS" --epochs 10 --threads 1 --jobs "${JOBS:-1}"
  --set train.log_every=20)
$AL compare "${COMMON[@]}" --set data.label_noise=0.3 --set data.noise_mode=symmetric \
  --set data.noise_on_valid=false --methods ce,gce,uniform,autoloss --out "$OUT/ipnnsym30-methods"
$AL compare "${COMMON[@]}" --data "$OUT/data/ml-implicit" --methods ce,tce,gce,uniform,autoloss \
  --out "$OUT/ipnnimplicit-methods"
