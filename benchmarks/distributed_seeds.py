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


def run(args: argparse.Namespace, nproc: int, seed: int) -> dict:
    options = ["--data", args.data, "--loss", args.loss, "--seed", str(seed), "--threads", "1"]
    options += ["--epochs", str(args.epochs)]
    if nproc > 1:
        options += ["--nproc", str(nproc)]
    return train_cached(Path(args.out) / f"{args.loss}-p{nproc}-s{seed}", options)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--loss", default="ce")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    print(machine_info())
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[int, list[dict]] = {1: [], args.nproc: []}
    for seed in seeds:
        for nproc in results:
            results[nproc].append(run(args, nproc, seed))
    print(f"\ndata {args.data}, loss {args.loss}, seeds {seeds}, one thread per process\n")
    print("| processes | test AUC | test logloss | best epoch | train rows/s |")
    print("|---|---|---|---|---|")
    for nproc, rs in results.items():
        auc = [r["test"]["auc"] for r in rs]
        ll = [r["test"]["logloss"] for r in rs]
        rate = [r["train_rows_per_second"] for r in rs]
        best = ", ".join(str(r["best_epoch"]) for r in rs)
        print(
            f"| {nproc} | {mean_sd(auc)} | {mean_sd(ll)} | {best} | {statistics.mean(rate):,.0f} |"
        )
    one = [r["test"]["auc"] for r in results[1]]
    many = [r["test"]["auc"] for r in results[args.nproc]]
    welch = stats.ttest_ind(many, one, equal_var=False).pvalue
    diff = statistics.mean(many) - statistics.mean(one)
    print(f"\nΔ test AUC ({args.nproc} − 1 processes): {diff:+.4f}, Welch p = {welch:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
