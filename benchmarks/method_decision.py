"""Measured choice of AutoLoss's default hypergradient mode: first-order vs unrolled vs plain CE.

Usage:
    python benchmarks/method_decision.py --data frappe=/tmp/autoloss-data/frappe_x1 \
        --data ml=/tmp/autoloss-data/ml-binary [--seeds 5] [--epochs 10] [--threads 1] \
        [--results FILE.jsonl]

For every dataset x method x seed it trains DeepFM (paper configuration: embedding 16, MLP 128-128
with BatchNorm, ReLU, dropout 0.2, Adam 1e-3, batch 2000) with early stopping on validation AUC
(patience 2, at most --epochs epochs), restores the best-validation weights and reports test AUC /
logloss. Methods: ``ce``; ``autoloss`` with ``mode=first-order``; ``autoloss`` with
``mode=unrolled`` (finite differences, ξ = 1e-3). Nothing is tuned on the test split. Seeds run
sequentially in one process; finished runs are kept in --results and skipped when rerun.

With ``--timing N`` it only times one training epoch per method (also the exact ``autograd``
unrolled implementation), N repetitions back to back, and prints the median and the ratio to CE.

Prints a table: mean ± std over seeds of test AUC, test logloss, best epoch, training seconds and
seconds per epoch, with the two-sided Welch t-test p-value of test AUC and logloss against ``ce``.
Timings are wall-clock on a shared machine: compare them within one run only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info
from _table import markdown
from autoloss.data.store import EncodedDataset
from autoloss.metrics import welch_ttest
from autoloss.train.config import RunConfig
from autoloss.train.trainer import Trainer

METHODS: dict[str, dict[str, Any]] = {
    "ce": {"loss.method": "ce"},
    "autoloss first-order": {"loss.method": "autoloss", "loss.mode": "first-order"},
    "autoloss unrolled": {
        "loss.method": "autoloss",
        "loss.mode": "unrolled",
        "loss.unrolled_impl": "finite-difference",
    },
}


def run_one(
    data: str, dataset: EncodedDataset, method: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    cfg = RunConfig()
    cfg.data.path = data
    cfg.model.name = "deepfm"
    cfg.train.epochs = args.epochs
    cfg.train.seed = seed
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    cfg.train.num_threads = args.threads
    for k, v in METHODS[method].items():
        cfg.set(k, v)
    for kv in args.set:
        cfg.set(*kv.split("=", 1))
    t0 = time.perf_counter()
    trainer = Trainer(cfg, dataset=dataset, log=lambda s: None)
    result = trainer.fit()
    policy_recs = [r for r in trainer.history if r.get("type") == "policy"]
    last_p = {
        k: v for k, v in (policy_recs[-1] if policy_recs else {}).items() if k.startswith("p_")
    }
    return {
        "method": method,
        "seed": seed,
        "test_auc": result["test"]["auc"],
        "test_logloss": result["test"]["logloss"],
        "valid_auc": result["valid"]["auc"],
        "best_epoch": result["best_epoch"],
        "epochs": result["epochs"],
        "train_seconds": result["train_seconds"],
        "wall_seconds": round(time.perf_counter() - t0, 2),
        "policy": result["policy"],
        "last_policy_stats": last_p,
    }


def mean_std(xs: list[float], fmt: str) -> str:
    if len(xs) < 2:
        return format(xs[0], fmt) if xs else "-"
    return f"{format(statistics.mean(xs), fmt)} ± {format(statistics.stdev(xs), fmt)}"


def table(rows: list[dict[str, Any]]) -> list[dict[str, object]]:
    """Per dataset and method: test AUC and logloss over seeds with Welch's p against ``ce``,
    best epoch and training seconds."""
    out: list[dict[str, object]] = []
    for ds in dict.fromkeys(r["dataset"] for r in rows):
        base = [r for r in rows if r["dataset"] == ds and r["method"] == "ce"]
        for m in METHODS:
            rs = sorted(
                (r for r in rows if r["dataset"] == ds and r["method"] == m),
                key=lambda r: r["seed"],
            )
            if not rs:
                continue
            auc = [r["test_auc"] for r in rs]
            ll = [r["test_logloss"] for r in rs]
            p_auc = "" if m == "ce" else f"{welch_ttest(auc, [r['test_auc'] for r in base])[1]:.3f}"
            p_ll = (
                "" if m == "ce" else f"{welch_ttest(ll, [r['test_logloss'] for r in base])[1]:.3f}"
            )
            out.append({
                "dataset": ds, "method": m, "seeds": str(len(rs)),
                "test AUC": mean_std(auc, ".4f"), "p (AUC vs ce)": p_auc,
                "test logloss": mean_std(ll, ".4f"), "p (logloss vs ce)": p_ll,
                "best epoch": mean_std([float(r["best_epoch"]) for r in rs], ".1f"),
                "train s": mean_std([r["train_seconds"] for r in rs], ".0f"),
                "s / epoch": mean_std(
                    [r["train_seconds"] / max(r["epochs"], 1) for r in rs], ".1f"
                ),
            })  # fmt: skip
    return out


def timing(data: str, args: argparse.Namespace) -> list[dict[str, object]]:
    """Median seconds of one training epoch per method, back to back in this process."""
    dataset = EncodedDataset(data)
    variants = {**METHODS, "autoloss unrolled (autograd)": {**METHODS["autoloss unrolled"]}}
    variants["autoloss unrolled (autograd)"]["loss.unrolled_impl"] = "autograd"
    secs: dict[str, list[float]] = {m: [] for m in variants}
    for _ in range(args.timing):
        for m, over in variants.items():
            cfg = RunConfig()
            cfg.data.path = data
            cfg.train.epochs = 1
            cfg.train.progress = "off"
            cfg.train.device = "cpu"
            cfg.train.num_threads = args.threads
            for k, v in over.items():
                cfg.set(k, v)
            for kv in args.set:
                cfg.set(*kv.split("=", 1))
            secs[m].append(Trainer(cfg, dataset=dataset, log=lambda s: None).fit()["train_seconds"])
    ce = statistics.median(secs["ce"])
    return [
        {
            "method": m,
            "s / epoch (median)": f"{statistics.median(xs):.2f}",
            "x CE": f"{statistics.median(xs) / ce:.2f}",
        }
        for m, xs in secs.items()
    ]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", action="append", required=True, help="NAME=DIR of an encoded dataset")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10, help="epoch cap (early stopping, patience 2)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)"
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--results", default="method_decision.jsonl", help="finished runs (resumable)")
    ap.add_argument("--timing", type=int, default=0, help="only time one epoch per method, N reps")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of every run (repeatable; not part of a result's key in"
                    " --results)")  # fmt: skip
    return ap


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train every (dataset, method, seed) not in ``--results`` yet (appending it there); the
    runs of ``--results`` of the datasets and methods asked for."""
    methods = [m.strip() for m in args.methods.split(",")]
    path = Path(args.results)
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["dataset"], r["method"], r["seed"]) for r in rows}
    for spec in args.data:
        name, data = spec.split("=", 1)
        dataset = EncodedDataset(data)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for m in methods:
                if (name, m, seed) in done:
                    continue
                r = {"dataset": name, **run_one(data, dataset, m, seed, args)}
                rows.append(r)
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(r) + "\n")
                print(
                    f"{name} {m} seed {seed}: test AUC {r['test_auc']:.4f} logloss "
                    f"{r['test_logloss']:.4f} best epoch {r['best_epoch']}/{r['epochs']} "
                    f"train {r['train_seconds']:.0f}s",
                    flush=True,
                )
    names = [s.split("=", 1)[0] for s in args.data]
    return [r for r in rows if r["dataset"] in names and r["method"] in methods]


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """The table of the runs (or with ``--timing``, each dataset's timing rows)."""
    if not args.timing:
        return table(run_all(args))
    specs = [spec.split("=", 1) for spec in args.data]
    return [{"dataset": name, **row} for name, data in specs for row in timing(data, args)]


def main() -> None:
    args = parser().parse_args()
    print(machine_info(), flush=True)
    if args.timing:
        for spec in args.data:
            name, data = spec.split("=", 1)
            print(f"\n{name}: one training epoch, DeepFM, {args.threads} thread(s)")
            print(markdown(timing(data, args)))
        return
    rows = run_all(args)
    print()
    print(markdown(table(rows)))


if __name__ == "__main__":
    main()
