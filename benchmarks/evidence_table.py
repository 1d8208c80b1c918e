"""Tables of an evidence grid: every method against CE, paired by seed, Holm-corrected.

Reads ``EXP_ROOT/<condition>-<variant>/runs/*/result.json`` (the layout of
``benchmarks/evidence_ml.sh``); for each condition, one table: test AUC (mean ± std), the paired
difference to ``ce`` of the same condition's ``methods`` grid (mean and 95% CI over seeds), the
paired t-test p and its Holm adjustment across the condition's methods, test logloss and test
logloss after temperature scaling (fitted on validation). Prints markdown.

    python benchmarks/evidence_table.py /tmp/evid
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from autoloss.metrics import holm, paired_ttest


def load(root: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """condition -> label -> seed -> result."""
    out: dict[str, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for exp in sorted(p for p in root.iterdir() if p.is_dir()):
        cond, _, variant = exp.name.partition("-")
        for res in sorted((exp / "runs").glob("*/result.json")):
            r = json.loads(res.read_text())
            label = r["method"] if variant == "methods" else f"{r['method']} [{variant}]"
            out[cond][label][int(r["seed"])] = r
    return out


def ci95(d: np.ndarray) -> float:
    return float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))


def table(cond: str, runs: dict[str, dict[int, dict]]) -> list[str]:
    base = runs["ce"]
    rows, ps = [], []
    for label, by_seed in runs.items():
        seeds = sorted(set(by_seed) & set(base))
        auc = np.array([by_seed[s]["test"]["auc"] for s in seeds])
        ref = np.array([base[s]["test"]["auc"] for s in seeds])
        d = auc - ref
        p = paired_ttest(auc, ref)[1] if label != "ce" else math.nan
        ps.append(p)
        ll = np.mean([by_seed[s]["test"]["logloss"] for s in seeds])
        llts = np.mean([by_seed[s]["test"].get("logloss_ts", math.nan) for s in seeds])
        rows.append(
            (label, len(seeds), auc.mean(), auc.std(ddof=1), d.mean(), ci95(d), p, ll, llts)
        )
    adj = holm(ps)
    out = [
        f"### {cond}",
        "",
        "| method | seeds | test AUC | Δ AUC vs ce (95% CI) | paired p | Holm p | test logloss | logloss (T-scaled) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (label, n, m, sd, dm, ci, p, ll, llts), pa in sorted(
        zip(rows, adj), key=lambda t: -t[0][2]
    ):
        delta = "–" if label == "ce" else f"{dm:+.4f} ± {ci:.4f}"
        fp = "–" if math.isnan(p) else f"{p:.3f}"
        fa = "–" if math.isnan(pa) else f"{pa:.3f}"
        bold = "**" if (not math.isnan(pa) and pa < 0.05) else ""
        out.append(
            f"| {label} | {n} | {m:.4f} ± {sd:.4f} | {bold}{delta}{bold} | {fp} | {fa} | {ll:.4f} | {llts:.4f} |"
        )
    return [*out, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    args = ap.parse_args()
    print(f"<!-- machine: {platform.node()} {platform.processor()} -->")
    for cond, runs in load(args.root).items():
        print("\n".join(table(cond, runs)))


if __name__ == "__main__":
    main()
