#!/usr/bin/env bash
# Where a GPU is lent: the tests that run on CUDA, then training rows/s with CE and AutoLoss,
# replicated against sharded embedding tables, at 1 process and (with 2 GPUs or more) 2.
#
#   bash benchmarks/gpu_smoke.sh [ROWS]        # ROWS: synthetic Criteo rows (default 400000)
#
# Needs the repository's .venv (make venv) with a CUDA build of torch 2.13.0 and, for the
# sharded runs, fbgemm-gpu==1.8.0 and torchrec==1.8.0 (--no-deps) instead of fbgemm-gpu-cpu.
# Prints the machine, the tests' summary and one line per run; writes everything under
# ${OUT:-bench-out}/gpu. Runs one thing at a time; about 5 minutes on one H100.
set -uo pipefail
ROWS=${1:-400000}
OUT=${OUT:-bench-out}/gpu
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

"$PY" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    print(" ", i, torch.cuda.get_device_name(i))
try:
    import torchrec, fbgemm_gpu  # noqa: F401
    print("torchrec: importable")
except Exception as exc:  # noqa: BLE001
    print("torchrec: not importable:", str(exc).splitlines()[0][:160])
EOF
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then echo "no CUDA device: nothing to measure"; exit 2; fi

echo "== tests on CUDA (the kernels on both devices, the API, sharded tables)"
timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider -m "not slow" \
    tests/ops tests/test_api.py tests/train/test_sharded_tables.py 2>&1 | tail -3

echo "== data: $ROWS synthetic Criteo rows"
if [ ! -f "$OUT/data/meta.json" ]; then
  "$PY" -m autoloss synth criteo --rows "$ROWS" --out "$OUT/raw.txt" --quiet
  "$PY" -m autoloss prepare --format criteo --input "$OUT/raw.txt" --out "$OUT/data" --quiet
fi

run() {  # NAME NPROC EMBEDDINGS LOSS
  local name=$1 nproc=$2 emb=$3 loss=$4
  local opt=adam
  timeout 300 "$PY" -m autoloss train --data "$OUT/data" --out "$OUT/$name" --overwrite \
      --device cuda --nproc "$nproc" --loss "$loss" --batch-size 4000 --epochs 1 --quiet \
      --progress off --set train.embeddings="$emb" --set optim.table_optimizer="$opt" \
      --set optim.clip_norm=0 --set train.max_steps=200 --set train.checkpoint_minutes=0 \
      > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then echo "$name: exit $rc: $(tail -n 1 "$OUT/$name.log")"; return; fi
  "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"$name: {r['train_rows_per_second']:,.0f} rows/s, test AUC {r['test']['auc']:.4f}\")" "$OUT/$name/result.json"
}

echo "== training rows/s (200 steps of 4000 rows, one epoch at most)"
for loss in ce autoloss; do
  for emb in replicated sharded; do
    run "$loss-$emb-1" 1 "$emb" "$loss"
    if [ "$GPUS" -ge 2 ]; then run "$loss-$emb-2" 2 "$emb" "$loss"; fi
  done
done
