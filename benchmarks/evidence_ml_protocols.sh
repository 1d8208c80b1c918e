#!/usr/bin/env bash
# Evidence on ml-latest-small under the two protocols of docs/data.md: implicit feedback with
# natural noise (every rating a positive, 2 sampled negatives per positive, positives rated below
# 4 are noisy and absent from test; validation noisy as given, or clean with
# data.noise_on_valid=false) and the temporal split (binary labels; train on the past, test on the
# future). DeepFM, 10 epochs at most with early stopping, the same settings for every method.
# Usage: bash benchmarks/evidence_ml_protocols.sh OUT [SEEDS]   (tables: evidence_table.py OUT)
set -euo pipefail
OUT=${1:?output directory}
SEEDS=${2:-5}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
IMPL="$OUT/data/ml-implicit"
TEMP="$OUT/data/ml-temporal"
[ -f "$IMPL/meta.json" ] || $AL prepare --format movielens --task implicit --out "$IMPL"
[ -f "$TEMP/meta.json" ] || $AL prepare --format movielens --split temporal --out "$TEMP"
COMMON=(--models deepfm --seeds "$SEEDS" --epochs 10 --threads 1 --jobs "${JOBS:-1}"
  --set train.log_every=20)
METHODS=ce,tce,gce,uniform,autoloss
for c in implicit implicitclean temporal; do
  case $c in
    implicit) SET=(--data "$IMPL") ;;
    implicitclean) SET=(--data "$IMPL" --set data.noise_on_valid=false) ;;
    temporal) SET=(--data "$TEMP") ;;
  esac
  $AL compare "${COMMON[@]}" "${SET[@]}" --methods "$METHODS" --out "$OUT/$c-methods"
  $AL compare "${COMMON[@]}" "${SET[@]}" "${HIST[@]}" --methods autoloss \
    --out "$OUT/$c-historyunrolled"
done
