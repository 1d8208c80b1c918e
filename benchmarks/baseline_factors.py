"""One factor at a time: how each training setting moves our CE baseline's test AUC.

Every configuration is trained with the same seeds (paired: one seed shares initialisation and
data order across configurations), and each is compared with the first one (the baseline) by the
paired t-test on per-seed differences. Results are cached per run directory, so an interrupted
study resumes where it stopped.

    python benchmarks/baseline_factors.py --data /tmp/autoloss-data/frappe_x1 --epochs 15 \
        --seeds 1,2,3 --out bench-out/factors-frappe \
        base: xavier:model.dense_init=xavier clip:optim.clip_norm=10 \
        plateau:optim.lr_decay_on_plateau=0.1 dense_adam:optim.lazy_embeddings=false

A configuration is ``NAME:KEY=VALUE,KEY=VALUE`` (``NAME:`` alone is the defaults).
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


def parse_config(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition(":")
    return name, [s for s in settings.split(",") if s]


def train(args: argparse.Namespace, name: str, settings: list[str], seed: int) -> dict:
    """Train one run (or read the finished one) and return its result.json."""
    options = ["--data", args.data, "--model", args.model, "--loss", "ce"]
    options += ["--epochs", str(args.epochs), "--seed", str(seed)]
    for s in [*args.set, *settings]:
        options += ["--set", s]
    return train_cached(Path(args.out) / f"{name}-s{seed}", options)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="deepfm")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--set", action="append", default=[], help="a setting for every run")
    p.add_argument("--out", required=True)
    p.add_argument("configs", nargs="+", help="NAME:KEY=VALUE,... (the first is the baseline)")
    return p


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per configuration: test AUC and logloss over seeds, the paired difference to the
    baseline (the first configuration) and its paired t-test p (none for one seed)."""
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [parse_config(c) for c in args.configs]
    print(f"data {args.data}, model {args.model}, epochs {args.epochs}, seeds {seeds}")
    results: dict[str, list[dict]] = {}
    for seed in seeds:  # seeds outermost: every configuration of a seed runs before the next
        for name, settings in configs:
            results.setdefault(name, []).append(train(args, name, settings, seed))
    base = [r["test"]["auc"] for r in results[configs[0][0]]]
    rows: list[dict[str, object]] = []
    for name, settings in configs:
        auc = [r["test"]["auc"] for r in results[name]]
        ll = [r["test"]["logloss"] for r in results[name]]
        diff = [a - b for a, b in zip(auc, base, strict=True)]
        paired = name != configs[0][0] and len(seeds) > 1
        p_value = stats.ttest_rel(auc, base).pvalue if paired else float("nan")
        rows.append({
            "configuration": name, "settings": " ".join(settings) or "defaults",
            "test AUC": mean_sd(auc), "test logloss": mean_sd(ll),
            "Δ AUC vs base": f"{statistics.mean(diff):+.4f}", "paired p": f"{p_value:.3f}",
        })  # fmt: skip
    return rows


def main() -> int:
    args = parser().parse_args()
    print(machine_info())
    rows = measure(args)
    print(f"\n{markdown(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
