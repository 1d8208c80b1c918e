"""Trainer behaviour on tiny synthetic data: learning, determinism, early stopping, resume, files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from autoloss.cli import main
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer


def small_cfg(data: Path, **over: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    cfg.model.name = "deepfm"
    cfg.model.embed_dim = 8
    cfg.model.mlp = [32, 32]
    cfg.loss.method = "ce"
    cfg.optim.batch_size = 128
    cfg.optim.lr = 3e-3
    cfg.train.epochs = 3
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    for k, v in over.items():
        cfg.set(k.replace("__", "."), v)
    return cfg


def test_training_learns_and_writes_run_dir(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = small_cfg(tiny_dataset, out=str(tmp_path / "run"))
    run_dir, result = train_run(cfg, log=lambda s: None)
    assert result["test"]["auc"] > 0.7
    for key in (
        "valid",
        "best_epoch",
        "epochs",
        "train_seconds",
        "train_rows_per_second",
        "method",
        "model",
        "seed",
    ):
        assert key in result
    for name in ("config.yaml", "metrics.jsonl", "result.json", "model.pt", "dataset/meta.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint.pt").exists()
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in evals if e["type"] == "eval"] == [1, 2, 3]
    # weights load with weights_only=True
    state = torch.load(run_dir / "model.pt", weights_only=True)
    assert "state_dict" in state


def test_same_seed_same_metrics(tiny_dataset: Path) -> None:
    r1 = Trainer(small_cfg(tiny_dataset, train__epochs=2), log=lambda s: None).fit()
    r2 = Trainer(small_cfg(tiny_dataset, train__epochs=2), log=lambda s: None).fit()
    r3 = Trainer(small_cfg(tiny_dataset, train__epochs=2, train__seed=7), log=lambda s: None).fit()
    assert r1["test"] == r2["test"] and r1["valid"] == r2["valid"]
    assert r1["test"] != r3["test"]


def test_early_stopping_keeps_best_epoch(
    tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([0.60, 0.70, 0.65, 0.64, 0.99])
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    trainer = Trainer(
        small_cfg(tiny_dataset, train__epochs=10, train__patience=2), log=lambda s: None
    )
    real_eval = trainer.evaluate_split

    def fake_eval(split: str) -> dict[str, float]:
        if split == "valid" and trainer.epoch not in snapshots:
            snapshots[trainer.epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            return {"auc": next(scripted), "logloss": 0.5}
        return real_eval(split)

    monkeypatch.setattr(trainer, "evaluate_split", fake_eval)
    result = trainer.fit()
    assert result["best_epoch"] == 2
    assert result["epochs"] == 4  # two evaluations without improvement
    final = trainer.model.state_dict()
    for k, v in snapshots[2].items():
        assert torch.equal(final[k], v), k


def test_resume_after_interrupt_matches_uninterrupted(tiny_dataset: Path, tmp_path: Path) -> None:
    full = small_cfg(tiny_dataset, out=str(tmp_path / "full"))
    _, expected = train_run(full, log=lambda s: None)

    cfg = small_cfg(tiny_dataset, out=str(tmp_path / "cut"))
    calls = {"n": 0}
    original = Trainer._evaluate_and_track

    def interrupt_second(self: Trainer, *losses: float) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *losses)

    Trainer._evaluate_and_track = interrupt_second  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, log=lambda s: None)
    finally:
        Trainer._evaluate_and_track = original  # type: ignore[method-assign]
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    _, resumed = train_run(cfg, resume=True, log=lambda s: None)
    assert resumed["test"] == expected["test"]
    assert resumed["epochs"] == expected["epochs"]


def test_failed_start_leaves_no_run_dir(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    code = main(["train", "--data", str(tiny_dataset), "--model", "nosuchmodel", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuchmodel" in err[0] and "deepfm" in err[0]
    assert not out.exists()


@pytest.mark.e2e
def test_cli_train_then_evaluate_reproduces_result(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tiny_dataset),
        "--loss",
        "uniform",
        "--epochs",
        "2",
        "--batch-size",
        "256",
        "--embed-dim",
        "8",
        "--mlp",
        "16",
        "--out",
        str(run),
        "--progress",
        "off",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "test AUC" in capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    assert main(["evaluate", "--run", str(run), "--split", "test", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["auc"] == pytest.approx(result["test"]["auc"], abs=1e-12)
    assert out["logloss"] == pytest.approx(result["test"]["logloss"], abs=1e-9)
    # the saved config repeats the run exactly
    assert (
        main(["train", "--config", str(run / "config.yaml"), "--out", str(tmp_path / "again")]) == 0
    )
    again = json.loads((tmp_path / "again" / "result.json").read_text())
    assert again["test"] == result["test"]
    # an existing run dir is refused without --overwrite, saying what it holds
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(a finished run)" in err[0] and "--resume" not in err[0]


def test_corrupt_checkpoint_is_one_line_error(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    train_run(small_cfg(tiny_dataset, out=str(run), train__epochs=1), log=lambda s: None)
    (run / "model.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.pt" in err[0]


def test_multiclass_training(tiny_multiclass_dataset: Path) -> None:
    result = Trainer(
        small_cfg(tiny_multiclass_dataset, loss__method="uniform"), log=lambda s: None
    ).fit()
    assert result["task"] == "multiclass"
    assert result["test"]["auc"] > 0.6


def test_learning_rate_decays_after_each_evaluation_without_improvement(
    tiny_dataset: Path,
) -> None:
    cfg = small_cfg(
        tiny_dataset,
        train__epochs=6,
        train__patience=6,
        train__eval_every_steps=2,
        optim__lr=0.05,  # large steps: some evaluations do not improve
        optim__lr_decay_on_plateau=0.5,
        optim__clip_norm=10.0,
    )
    trainer = Trainer(cfg)
    records: list[dict[str, Any]] = []
    trainer.on_eval = records.append
    trainer.fit()
    best = -1.0
    bad = 0
    for rec in records:
        if rec["auc"] > best:
            best = rec["auc"]
        else:
            bad += 1
    assert 0 < bad < len(records)
    lrs = [g["lr"] for o in trainer.optimizer.optimizers for g in o.param_groups]
    assert lrs == [pytest.approx(0.05 * 0.5**bad)] * len(lrs)
