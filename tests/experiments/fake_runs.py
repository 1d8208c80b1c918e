"""Fabricated run and experiment directories (no training): the files a finished run writes."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.experiments.compare import Experiment, PlannedRun
from autoloss.train.config import RunConfig

CANDIDATES = ("focal", "kl", "hinge", "ce")
# a method's true mean test AUC in the fabricated data (autoloss best, slf the best baseline)
METHOD_AUC = {
    "ce": 0.800,
    "focal": 0.797,
    "uniform": 0.801,
    "darts": 0.803,
    "slf": 0.805,
    "autoloss": 0.808,
}
LEARNT = {"darts", "slf", "autoloss"}


def write_fake_run(
    run_dir: Path,
    *,
    model: str = "deepfm",
    method: str = "autoloss",
    seed: int = 2021,
    epochs: int | None = None,
    num_classes: int = 2,
    rows_per_epoch: int = 800,
    auc_shift: float = 0.0,
) -> dict:
    rng = np.random.default_rng(seed * 7 + len(method) * 13 + len(model))
    epochs = epochs or 3 + seed % 2  # early stopping: seeds run different lengths
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig()
    cfg.model.name, cfg.loss.method, cfg.train.seed, cfg.out = model, method, seed, str(run_dir)
    cfg.save_yaml(run_dir / "config.yaml")
    base = METHOD_AUC.get(method, 0.79) + (0.004 if model == "ipnn" else 0.0) + auc_shift
    test_auc = float(base + rng.normal(0, 0.002))
    lines = []
    for e in range(1, epochs + 1):
        auc = base - 0.02 / e + float(rng.normal(0, 0.001))
        lines.append(
            {
                "type": "eval",
                "split": "valid",
                "epoch": e,
                "step": e * 4,
                "rows": e * rows_per_epoch,
                "train_loss": 0.5 / e,
                "train_seconds": 1.0 * e,
                "auc": auc,
                "logloss": 0.5 - auc / 10,
            }
        )
    fixed = {"uniform": np.full(4, 0.25), "search": rng.dirichlet(np.ones(4))}  # search: per seed
    if method in LEARNT or method in fixed:
        for step in range(2, epochs * 4 + 1, 2):
            t = step / (epochs * 4)
            p = fixed.get(method, np.array([0.4 - 0.2 * t, 0.2, 0.1, 0.3 + 0.2 * t]))
            rec = {"type": "policy", "step": step, "rows": step * rows_per_epoch // 4}
            if method == "autoloss":
                rec["tau"] = 1 - 5e-5 * step
            for k, c in enumerate(CANDIDATES):
                rec[f"p_{c}"] = float(p[k])
                for y in range(num_classes):
                    rec[f"p_{c}_y{y}"] = float(
                        p[k] + (0.05 * (y - 0.5) if c in ("ce", "focal") else 0.0)
                    )
            lines.append(rec)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    result = {
        "test": {"auc": test_auc, "logloss": float(0.45 - test_auc / 10 + rng.normal(0, 0.001))},
        "valid": {"auc": test_auc + 0.001, "logloss": 0.44},
        "best_epoch": int(rng.integers(1, epochs + 1)),
        "epochs": epochs,
        "steps": epochs * 4,
        "train_rows": epochs * rows_per_epoch,
        "train_seconds": float(3.0 + rng.random()),
        "train_rows_per_second": float(rows_per_epoch * epochs / 3.5),
        "method": method,
        "model": model,
        "seed": seed,
        "task": "binary" if num_classes == 2 else "multiclass",
        "candidates": [method]
        if method in METHOD_AUC and method not in LEARNT and method != "uniform"
        else list(CANDIDATES),
        "policy": {"search_seconds": 12.5} if method == "search" else {},
    }
    (run_dir / "result.json").write_text(json.dumps(result))
    return result


def write_fake_experiment(
    out: Path,
    *,
    models: Sequence[str] = ("deepfm", "ipnn"),
    methods: Sequence[str] = ("ce", "focal", "darts", "slf", "autoloss"),
    seeds: Sequence[int] = (2021, 2022, 2023, 2024, 2025),
    data: Path | None = None,
    grid: Sequence[tuple[str, list[Any]]] = (),
    shift: Callable[[PlannedRun], float] | None = None,
) -> Experiment:
    """A finished experiment; ``grid`` adds conditions, ``shift(run)`` moves a run's AUC."""
    base = RunConfig()
    base.data.path = str(data or out / "data")
    exp = Experiment(out, list(models), list(methods), list(seeds), base, "binary", grid=list(grid))
    exp.save()
    for run in exp.plan():
        write_fake_run(
            run.run_dir,
            model=run.model,
            method=run.method,
            seed=run.seed,
            auc_shift=shift(run) if shift else 0.0,
        )
    return exp


def planned(exp: Experiment, model: str, method: str, seed: int) -> PlannedRun:
    return next(r for r in exp.plan() if (r.model, r.method, r.seed) == (model, method, seed))
