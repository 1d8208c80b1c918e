# shellcheck shell=bash
# What the evidence scripts share (sourced by benchmarks/evidence_*.sh): the command, the settings
# of every Frappe_x1 run, the data conditions by name, and the AutoLoss variant of the tables'
# [history] and [historyunrolled].
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

# The data conditions by name (COND[name]: the --set options; noisy labels with a clean validation
# split, the test split never touched). Unquoted on use: the options split at the spaces.
CLEAN_VALID="--set data.noise_on_valid=false"
declare -A COND=(
  [clean]=""
  [sym30]="--set data.label_noise=0.3 --set data.noise_mode=symmetric $CLEAN_VALID"
  [sym40]="--set data.label_noise=0.4 --set data.noise_mode=symmetric $CLEAN_VALID"
  [p2n30]="--set data.label_noise=0.3 --set data.noise_mode=pos2neg $CLEAN_VALID"
  [pos05]="--set data.pos_rate=0.05"
  [pos02]="--set data.pos_rate=0.02"
)
