"""``autoloss compare`` on tiny synthetic data: grid, files, resume, interrupted runs, errors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

import autoloss.train.run as run_mod
from autoloss.cli import main
from autoloss.errors import ConfigError
from autoloss.experiments.compare import (
    PAPER_METHODS,
    PAPER_MODELS,
    experiment_from_config,
    prepare_experiment,
    run_experiment,
)
from autoloss.experiments.tables import REQUIRED_COLUMNS, read_results_csv
from autoloss.train.config import RunConfig
from autoloss.train.rundir import RunDir
from autoloss.train.trainer import Trainer

# tiny runs: a few steps of a small DeepFM
TINY = ["--epochs", "1", "--max-steps", "3", "--batch-size", "256", "--embed-dim", "4", "--mlp", "8",
        "--progress", "off", "--device", "cpu", "--threads", "1"]  # fmt: skip


def tiny_cfg(data: Path, **over: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    for k, v in {"train.epochs": 1, "train.max_steps": 3, "optim.batch_size": 256, "model.embed_dim": 4,
                 "model.mlp": [8], "train.progress": "off", "train.device": "cpu", "train.num_threads": 1,
                 **over}.items():  # fmt: skip
        cfg.set(k, v)
    return cfg


class TrainCounter:
    """Wraps train_run to count (and record the arguments of) every training started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        original = run_mod.train_run

        def counted(cfg: RunConfig, **kw: Any) -> Any:
            self.calls.append({"out": cfg.out, **kw})
            return original(cfg, **kw)

        monkeypatch.setattr(run_mod, "train_run", counted)


def _mtimes(exp: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(exp.glob("runs/*/result.json"))}


@pytest.mark.e2e
def test_compare_end_to_end_then_resume_skips_finished_runs(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exp = tmp_path / "exp"
    argv = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods", "ce,uniform",
            "--seeds", "2", "--seed", "7", "--out", str(exp), *TINY]  # fmt: skip
    counter = TrainCounter(monkeypatch)
    assert main(argv) == 0
    assert len(counter.calls) == 4
    out = capsys.readouterr().out
    assert "## Mean ± std and significance" in out and "table.md" in out
    rows = read_results_csv(exp / "results.csv")
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("ce", 7),
        ("ce", 8),
        ("uniform", 7),
        ("uniform", 8),
    ]
    assert all(0 < r["test_auc"] < 1 and r["test_logloss"] > 0 for r in rows)
    header = (exp / "results.csv").read_text().splitlines()[0].split(",")
    assert tuple(header[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    for name in ("deepfm-ce-s7", "deepfm-uniform-s8"):
        rd = exp / "runs" / name
        assert {"config.yaml", "metrics.jsonl", "result.json", "model.pt"} <= {
            p.name for p in rd.iterdir()
        }
        saved = yaml.safe_load((rd / "config.yaml").read_text())
        assert (
            saved["train"]["max_steps"] == 3 and saved["model"]["embed_dim"] == 4
        )  # options reach every run
    meta = yaml.safe_load((exp / "experiment.yaml").read_text())
    assert meta["seeds"] == [7, 8] and meta["methods"] == ["ce", "uniform"]
    assert (exp / "table.md").read_text().startswith("# Comparison on tiny")

    # second invocation: nothing trained, finished runs untouched
    before = _mtimes(exp)
    assert main(argv) == 0
    assert len(counter.calls) == 4
    assert _mtimes(exp) == before

    # a run killed before its first checkpoint leaves a directory without result: restarted cleanly
    rd = exp / "runs" / "deepfm-uniform-s8"
    (rd / "result.json").unlink()
    (rd / "model.pt").unlink()
    assert main(argv) == 0
    assert [c["out"] for c in counter.calls[4:]] == [str(rd)]
    assert counter.calls[4].get("overwrite") is True
    assert (rd / "result.json").is_file()
    assert len(read_results_csv(exp / "results.csv")) == 4


def test_interrupted_run_resumes_from_its_checkpoint(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = experiment_from_config(
        tiny_cfg(
            tiny_dataset, **{"train.epochs": 2, "train.max_steps": 0, "optim.batch_size": 1000}
        ),
        tmp_path / "exp",
        models=["deepfm"],
        methods=["ce"],
        num_seeds=1,
    )
    prepare_experiment(exp)
    original_finish = Trainer.finish

    def interrupted(self: Trainer) -> dict[str, Any]:
        raise KeyboardInterrupt  # Ctrl-C after the last epoch's checkpoint

    monkeypatch.setattr(Trainer, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, log=lambda s: None, quiet_runs=True)
    (run,) = exp.plan()
    assert run.state() == "interrupted"
    evals_before = (run.run_dir / "metrics.jsonl").read_text().count('"eval"')
    assert evals_before == 2

    monkeypatch.setattr(Trainer, "finish", original_finish)
    counter = TrainCounter(monkeypatch)
    outcome = run_experiment(exp, log=lambda s: None, quiet_runs=True)
    assert [c.get("resume") for c in counter.calls] == [True]
    assert outcome.trained == [run.name] and not outcome.failed
    assert (run.run_dir / "metrics.jsonl").read_text().count(
        '"eval"'
    ) == evals_before  # not retrained
    result = RunDir(run.run_dir).read_result()
    assert result is not None and result.epochs == 2


def test_corrupt_checkpoint_restarts_the_run(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = experiment_from_config(
        tiny_cfg(tiny_dataset), tmp_path / "exp", models=["deepfm"], methods=["ce"], num_seeds=1
    )
    prepare_experiment(exp)
    (run,) = exp.plan()
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "checkpoint.pt").write_bytes(b"killed while writing")
    counter = TrainCounter(monkeypatch)
    outcome = run_experiment(exp, log=lambda s: None, quiet_runs=True)
    assert outcome.trained == [run.name]
    assert [(c.get("resume"), c.get("overwrite")) for c in counter.calls] == [
        (True, None),
        (None, True),
    ]
    assert run.state() == "done"


def test_grid_defaults_seeds_and_settings_mismatch(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg(tiny_dataset, **{"train.seed": 100})
    exp = experiment_from_config(cfg, tmp_path / "exp")
    assert exp.models == list(PAPER_MODELS) == ["deepfm", "ipnn"]
    assert exp.methods == list(PAPER_METHODS)
    assert {"ce", "focal", "kl", "hinge", "uniform", "search", "darts", "slf", "autoloss"} == set(
        exp.methods
    )
    assert exp.seeds == [100, 101, 102, 103, 104]
    assert len(exp.plan()) == 2 * 9 * 5
    assert len({r.run_dir for r in exp.plan()}) == 90
    with pytest.raises(ConfigError, match="--seeds"):
        experiment_from_config(cfg, tmp_path / "x", num_seeds=0)
    with pytest.raises(ConfigError, match="listed twice"):
        experiment_from_config(cfg, tmp_path / "x", methods=["ce", "ce"])

    small = experiment_from_config(
        cfg, tmp_path / "exp", models=["deepfm"], methods=["ce"], num_seeds=1
    )
    prepare_experiment(small)
    other = experiment_from_config(
        tiny_cfg(tiny_dataset, **{"train.seed": 100, "optim.lr": 0.01}),
        tmp_path / "exp",
        models=["deepfm"],
        methods=["ce"],
    )
    with pytest.raises(ConfigError, match=r"other settings \(optim.lr"):
        prepare_experiment(other)
    # the thread count changes what runs compute (the last bits): not another table's runs
    threads = experiment_from_config(
        tiny_cfg(tiny_dataset, **{"train.num_threads": 2}),
        tmp_path / "exp",
        models=["deepfm"],
        methods=["ce"],
    )
    with pytest.raises(ConfigError, match=r"other settings \(train.num_threads: 1 -> 2\)"):
        prepare_experiment(threads)
    # settings that do not change results (progress, heap) and a larger grid are fine
    same = experiment_from_config(
        tiny_cfg(
            tiny_dataset, **{"train.seed": 100, "train.heap": "system", "train.progress": "on"}
        ),
        tmp_path / "exp",
        models=["deepfm", "ipnn"],
        methods=["ce", "focal"],
    )
    prepare_experiment(same)


def test_compare_errors_are_one_line_and_create_nothing(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    assert (
        main(
            [
                "compare",
                "--data",
                str(tiny_dataset),
                "--methods",
                "ce,nope",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--methods" in err and "nope" in err
    assert not out.exists()
    argv = ["compare", "--data", str(tiny_dataset), "--models", "deepfm,nope", "--out", str(out)]
    assert main([*argv, *TINY]) == 2
    err = capsys.readouterr().err
    assert "--models" in err and "nope" in err and not out.exists()
    assert main(["compare", "--data", str(tmp_path / "missing"), "--out", str(out), *TINY]) == 2
    assert "missing" in capsys.readouterr().err
    assert not out.exists()
    assert (
        main(
            [
                "compare",
                "--data",
                str(tiny_dataset),
                "--model",
                "deepfm",
                "--models",
                "ipnn",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "--models" in capsys.readouterr().err


def test_multiclass_compare(tiny_multiclass_dataset: Path, tmp_path: Path) -> None:
    exp = experiment_from_config(
        tiny_cfg(tiny_multiclass_dataset, **{"train.max_steps": 6}),
        tmp_path / "exp5",
        models=["deepfm"],
        methods=["ce", "uniform"],
        num_seeds=2,
    )
    prepare_experiment(exp)
    assert exp.task == "multiclass"
    outcome = run_experiment(exp, log=lambda s: None, quiet_runs=True)
    assert len(outcome.rows) == 4 and not outcome.failed
    assert all(r["task"] == "multiclass" and 0 < r["test_auc"] < 1 for r in outcome.rows)
    # logloss of 5 classes starts near ln 5
    assert all(math.log(5) * 0.8 < r["test_logloss"] < math.log(5) * 1.2 for r in outcome.rows)
    assert "AUC (macro one-vs-rest)" in outcome.table


@pytest.mark.e2e
@pytest.mark.slow  # ~15 s: spawned workers import torch
def test_parallel_workers_give_the_same_results_as_serial(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    kw: dict[str, Any] = {"models": ["deepfm"], "methods": ["ce", "uniform"], "num_seeds": 1}
    serial = experiment_from_config(tiny_cfg(tiny_dataset), tmp_path / "serial", **kw)
    parallel = experiment_from_config(tiny_cfg(tiny_dataset), tmp_path / "parallel", **kw)
    for exp in (serial, parallel):
        prepare_experiment(exp)
    a = run_experiment(serial, log=lambda s: None, quiet_runs=True)
    b = run_experiment(parallel, jobs=2, log=lambda s: None, quiet_runs=True)
    assert sorted(b.trained) == sorted(a.trained) and not b.failed
    for ra, rb in zip(a.rows, b.rows):
        assert (ra["method"], ra["seed"]) == (rb["method"], rb["seed"])
        assert rb["test_auc"] == pytest.approx(ra["test_auc"], abs=1e-6)  # seeded: same numbers
