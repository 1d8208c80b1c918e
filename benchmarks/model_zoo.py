"""Every model with the CE loss on one prepared dataset: test AUC / logloss and speed.

Usage: python benchmarks/model_zoo.py --data /tmp/autoloss-data/frappe_x1 [--models deepfm,ipnn]
       [--epochs 30] [--seed 2021] [--out bench-out/zoo-frappe]

Each model trains with the paper defaults (embedding 16, MLP 128-128, BatchNorm, dropout 0.2,
Adam 1e-3, batch 2000) and early stopping on validation AUC (patience 2); the table is printed as
Markdown, ready for docs/results.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info
from _table import markdown
from autoloss.models import model_names
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default=",".join(model_names()))
    ap.add_argument("--loss", default="ce")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=2021)
    ap.add_argument("--out", default="bench-out/zoo")
    ap.add_argument("--set", action="append", default=[], help="extra config KEY=VALUE")
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per model: test and validation figures, epochs and training speed."""
    rows: list[dict[str, object]] = []
    for name in args.models.split(","):
        cfg = RunConfig()
        cfg.data.path = args.data
        cfg.model.name = name
        cfg.loss.method = args.loss
        cfg.train.epochs = args.epochs
        cfg.train.seed = args.seed
        cfg.train.progress = "off"
        for kv in args.set:
            k, v = kv.split("=", 1)
            cfg.set(k, v)
        cfg.out = str(Path(args.out) / f"{name}-{args.loss}-s{args.seed}")
        t0 = time.perf_counter()
        _, r = train_run(cfg, overwrite=True, log=lambda s: None)
        wall = time.perf_counter() - t0
        print(f"{name}: test AUC {r['test']['auc']:.4f} ({wall:.0f} s)", flush=True)
        rows.append({
            "model": name, "test AUC": f"{r['test']['auc']:.4f}",
            "test logloss": f"{r['test']['logloss']:.4f}", "valid AUC": f"{r['valid']['auc']:.4f}",
            "best epoch / epochs": f"{r['best_epoch']} / {r['epochs']}",
            "train rows/s": float(r["train_rows_per_second"]), "wall s": wall,
        })  # fmt: skip
    return rows


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
