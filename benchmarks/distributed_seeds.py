"""One process against N processes (``autoloss train --nproc N``) on the same data: test AUC over
seeds (Welch p: is a distributed run within seed noise of a single-process one?) and rows/s with
one thread per process.

    python benchmarks/distributed_seeds.py --data /tmp/autoloss-data/ml-binary --seeds 1,2,3,4,5 \
        --nproc 2 --loss ce --out bench-out/dist

Runs go one after another (never two at once); finished runs are read back, not trained again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from scipy import stats

from _machine import machine_info  # type: ignore[import-not-found]
from _runs import mean_sd, train_cached  # type: ignore[import-not-found]
from _table import markdown  # type: ignore[import-not-found]


def run(args: argparse.Namespace, nproc: int, seed: int) -> dict:
    options = ["--data", args.data, "--loss", args.loss, "--seed", str(seed), "--threads", "1"]
    options += ["--epochs", str(args.epochs)]
    options += [a for kv in getattr(args, "set", []) for a in ("--set", kv)]
    if nproc > 1:
        options += ["--nproc", str(nproc)]
    return train_cached(Path(args.out) / f"{args.loss}-p{nproc}-s{seed}", options)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--loss", default="ce")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of every run (repeatable)")  # fmt: skip
    return p


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per process count (test AUC and logloss over seeds, rows/s), then Welch's p."""
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[int, list[dict]] = {1: [], args.nproc: []}
    for seed in seeds:
        for nproc in results:
            results[nproc].append(run(args, nproc, seed))
    print(f"data {args.data}, loss {args.loss}, seeds {seeds}, one thread per process")
    rows: list[dict[str, object]] = []
    for nproc, rs in results.items():
        rows.append({
            "processes": nproc,
            "test AUC": mean_sd([r["test"]["auc"] for r in rs]),
            "test logloss": mean_sd([r["test"]["logloss"] for r in rs]),
            "best epoch": ", ".join(str(r["best_epoch"]) for r in rs),
            "train rows/s": statistics.mean(r["train_rows_per_second"] for r in rs),
        })  # fmt: skip
    one = [r["test"]["auc"] for r in results[1]]
    many = [r["test"]["auc"] for r in results[args.nproc]]
    welch = stats.ttest_ind(many, one, equal_var=False).pvalue if len(seeds) > 1 else None
    diff = statistics.mean(many) - statistics.mean(one)
    rows.append({"processes": f"{args.nproc} − 1", "test AUC": f"{diff:+.4f}", "Welch p": welch})
    return rows


def main() -> int:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
