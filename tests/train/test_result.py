"""``RunResult``: result.json typed and versioned, read back from files of any version."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from autoloss.experiments.tables import result_row
from autoloss.train.result import RESULT_FORMAT, RunResult
from autoloss.train.rundir import RunDir

# result.json as the trainer wrote it before it had a ``format`` (a two-rank run with warnings)
OLD = {
    "test": {"auc": 0.75, "logloss": 0.5, "logloss_ts": 0.49, "temperature": 1.1},
    "valid": {"auc": 0.76, "logloss": 0.48},
    "best_epoch": 2,
    "best_step": 20,
    "epochs": 3,
    "steps": 30,
    "train_rows": 960,
    "train_seconds": 1.5,
    "train_rows_per_second": 640.0,
    "method": "search",
    "model": "fm",
    "seed": 2021,
    "task": "binary",
    "candidates": ["focal", "ce"],
    "device": "cpu",
    "threads": 1,
    "policy": {"search_seconds": 3.0, "weights": [0.5, 0.5]},
    "autoloss_version": "0.1.0",
    "world_size": 2,
    "nonfinite_skipped": 1,
    "warnings": ["training may have diverged"],
    "conditions": {"label_noise": 0.1},
}


def test_an_old_result_reads_back_and_writes_the_same_keys_plus_its_format() -> None:
    r = RunResult.from_dict(json.loads(json.dumps(OLD)))
    assert r.method == "search" and r.best_step == 20 and r.world_size == 2
    assert r.search_seconds == 3.0 and r.metric("test", "auc") == 0.75
    assert r.to_dict() == {**OLD, "format": RESULT_FORMAT}
    assert list(r.to_dict())[:-1] == list(OLD)  # the key order the trainer wrote
    assert r["test"] == OLD["test"]  # the file's dict, by key


def test_a_partial_or_unknown_result_is_kept_as_it_was() -> None:
    partial = {"test": {"auc": 0.7}, "valid": {}, "method": "ce", "search_seconds": 2.0, "x": [1]}
    r = RunResult.from_dict(partial)
    assert (
        r.best_epoch is None
        and r.candidates == []
        and r.extra
        == {
            "search_seconds": 2.0,
            "x": [1],
        }
    )
    assert r.search_seconds == 2.0 and math.isnan(r.metric("valid", "auc"))
    # a missing scalar stays missing; a missing list or object comes back empty
    assert r.to_dict() == {**partial, "candidates": [], "policy": {}, "format": RESULT_FORMAT}
    with pytest.raises(TypeError):
        RunResult.from_dict([1, 2])  # type: ignore[arg-type]


def test_run_dir_writes_and_reads_a_result(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    result = RunResult.from_dict(OLD)
    rd.finish(result)
    assert json.loads(rd.result.read_text())["format"] == RESULT_FORMAT
    assert rd.read_result() == result


def test_fabricated_runs_read_back(tmp_path: Path) -> None:
    from experiments.fake_runs import write_fake_run

    written = write_fake_run(tmp_path / "r", method="search")
    rd = RunDir(tmp_path / "r")
    r = rd.read_result()
    assert r is not None and r.to_dict() == {**written, "format": RESULT_FORMAT}
    row = result_row(r, model="deepfm", method="search", seed=2021, run_dir=rd.path)
    assert row["search_seconds"] == 12.5 and row["test_auc"] == written["test"]["auc"]
    assert row == result_row(written, model="deepfm", method="search", seed=2021, run_dir=rd.path)
