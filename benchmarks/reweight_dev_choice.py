"""The development condition's choice for ``--loss reweight``: mean selection-split AUC per variant.

Reads ``EXP_ROOT/dev-<variant>/runs/*/result.json`` (``autoloss compare --plan benchmarks/grids/reweight-dev.yaml``) and
prints, per variant, the seeds, the mean ± std of the *validation* (selection split) AUC and
logloss, and the choice: the ``reweight`` variant with the highest mean validation AUC. Test
figures are not read (docs/method.md, "The protocol").

    python benchmarks/reweight_dev_choice.py exp/rw
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(root: Path) -> dict[str, list[dict[str, float]]]:
    """variant -> the ``valid`` metrics of each run, by seed order."""
    out: dict[str, list[dict[str, float]]] = {}
    for exp in sorted(root.glob("dev-*")):
        runs = sorted(exp.glob("runs/*/result.json"))
        results = [json.loads(p.read_text()) for p in runs]
        for r in results:
            variant = exp.name.removeprefix("dev-")
            label = f"reweight [{variant}]" if r["method"] == "reweight" else r["method"]
            out.setdefault(label, []).append(r["valid"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    args = ap.parse_args()
    variants = load(args.root)
    print("| variant | seeds | valid AUC (selection split) | valid logloss |")
    print("|---|---|---|---|")
    for label, runs in variants.items():
        auc = np.array([r["auc"] for r in runs])
        ll = np.array([r["logloss"] for r in runs])
        print(
            f"| {label} | {len(runs)} | {auc.mean():.4f} ± {auc.std(ddof=1):.4f} | {ll.mean():.4f} |"
        )
    candidates = {k: v for k, v in variants.items() if k.startswith("reweight")}
    best = max(candidates, key=lambda k: float(np.mean([r["auc"] for r in candidates[k]])))
    print(f"\nchoice (highest mean selection AUC among the reweight variants): {best}")


if __name__ == "__main__":
    main()
