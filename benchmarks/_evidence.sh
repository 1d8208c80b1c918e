# shellcheck shell=bash
# What the evidence scripts share (sourced by benchmarks/evidence_*.sh): the command, the settings
# of every Frappe_x1 run, and the AutoLoss variant of the tables' [history] and [historyunrolled].
AL=${AUTOLOSS:-autoloss}
# [history]: the robust candidates, the richer controller inputs with the per-example loss
# history, and tau annealed over the run; [historyunrolled]: the same, unrolled.
HISTORY=(--set loss.candidates=focal,kl,hinge,ce,gce,mae,tce
  --set loss.controller_inputs=label,prediction,losses,margin,progress,history
  --set loss.tau_anneal=1.0)
HIST=("${HISTORY[@]}" --set loss.mode=unrolled)

# DeepFM on Frappe_x1, the paper configuration, 30 epochs at most, one thread per run:
# frappe_common DATA SEEDS JOBS sets COMMON.
frappe_common() {
  COMMON=(--data "$1" --models deepfm --seeds "$2" --epochs 30 --threads 1 --jobs "$3"
    --set train.log_every=20)
}
