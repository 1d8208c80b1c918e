#!/usr/bin/env bash
# What a cheaper controller costs in accuracy (issue 13: AutoLoss's fixed per-step cost on the CPU).
# DeepFM on Frappe_x1 (the paper configuration, 30 epochs max with early stopping), clean labels and
# 30% symmetric noise with a clean validation split: CE and the paper's AutoLoss (controller
# 128-128, one update every f = 7 steps), and AutoLoss with a 4x narrower controller (32-32,
# [c32]), with updates every 14 steps ([f14]) and with both ([c32f14]); paired seeds, the same
# validation data. Usage: bash benchmarks/evidence_controller_cost.sh DATA OUT [SEEDS] [CONDITIONS]
# Tables: python benchmarks/evidence_table.py OUT
set -euo pipefail
DATA=${1:?prepared Frappe_x1 directory}
OUT=${2:?output directory}
SEEDS=${3:-5}
CONDITIONS=${4:-clean,sym30}
source "$(dirname "${BASH_SOURCE[0]}")/_evidence.sh"
frappe_common "$DATA" "$SEEDS" 2
C32="--set loss.controller_hidden=32,32"
F14="--set loss.update_every=14"
# the AutoLoss variants by name (unquoted on use, like COND)
declare -A VARIANT=([c32]="$C32" [f14]="$F14" [c32f14]="$C32 $F14")
for c in ${CONDITIONS//,/ }; do
  # shellcheck disable=SC2086
  $AL compare "${COMMON[@]}" ${COND[$c]} --methods ce,autoloss --out "$OUT/$c-methods"
  for v in c32 f14 c32f14; do
    # shellcheck disable=SC2086
    $AL compare "${COMMON[@]}" ${COND[$c]} ${VARIANT[$v]} --methods autoloss --out "$OUT/$c-$v"
  done
done
