"""The 5-class task end to end: a small MovieLens ratings.csv -> prepare -> compare -> report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.experiments.tables import read_results_csv


def write_ratings(path: Path, rows: int = 4000, seed: int = 0) -> Path:
    """MovieLens layout (userId,movieId,rating,timestamp), half stars, ratings driven by user+movie."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 120, rows)
    movies = rng.integers(1, 200, rows)
    bias_u = rng.normal(0, 0.8, 120)
    bias_m = rng.normal(0, 0.8, 200)
    score = 3.2 + bias_u[users] + bias_m[movies] + rng.normal(0, 0.5, rows)
    rating = np.clip(np.round(score * 2) / 2, 0.5, 5.0)
    ts = 964982703 + np.arange(rows) * 60
    lines = ["userId,movieId,rating,timestamp"]
    lines += [f"{u},{m},{r:.1f},{t}" for u, m, r, t in zip(users, movies, rating, ts)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.e2e
def test_five_class_ratings_through_compare_and_report(tmp_path: Path) -> None:
    ratings = write_ratings(tmp_path / "ratings.csv")
    data = tmp_path / "ml5"
    assert main(["prepare", "--format", "movielens", "--input", str(ratings), "--task", "multiclass",
                 "--out", str(data)]) == 0  # fmt: skip
    exp = tmp_path / "exp"
    argv = ["compare", "--data", str(data), "--models", "deepfm", "--methods", "ce,autoloss",
            "--seeds", "2", "--out", str(exp), "--epochs", "2", "--batch-size", "256",
            "--embed-dim", "4", "--mlp", "16", "--progress", "off", "--device", "cpu",
            "--threads", "1", "--update-every", "2", "--set", "train.log_every=2"]  # fmt: skip
    assert main(argv) == 0
    rows = read_results_csv(exp / "results.csv")
    assert len(rows) == 4
    for r in rows:
        assert r["task"] == "multiclass"
        assert 0.5 < r["test_auc"] < 1  # macro one-vs-rest AUC: the ratings are learnable
        assert 0 < r["test_logloss"] < math.log(5) * 1.1  # multi-class cross-entropy
    table = (exp / "table.md").read_text()
    assert "AUC (macro one-vs-rest)" in table and "logloss (cross-entropy)" in table
    assert main(["report", str(exp)]) == 0
    out = exp / "report"
    for name in ("policy_map_deepfm-autoloss.png", "candidate_probabilities_deepfm-autoloss.png",
                 "learning_curves_deepfm.png", "metrics_by_method.png"):  # fmt: skip
        assert (out / name).stat().st_size > 5000, name
