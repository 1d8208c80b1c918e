"""Experiment tracking (``train.tracking``, autoloss.train.tracking): what a run sends to
TensorBoard and MLflow, read back with their own readers (TensorBoard's EventAccumulator, MLflow's
client on the local file store), equals what metrics.jsonl and config.yaml hold; a resumed run
continues the same MLflow run; a missing extra is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("tensorboard", reason="the 'tracking' extra")
pytest.importorskip("mlflow", reason="the 'tracking' extra")

from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)
from test_trainer import small_cfg

from autoloss.cli import main
from autoloss.train import tracking
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer

QUIET = lambda s: None  # noqa: E731


@pytest.fixture(autouse=True)
def _local_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run's own file store (RUN/mlruns), whatever the environment says."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


def _cfg(data: Path, out: Path, **over: Any) -> Any:
    settings = {
        "loss__method": "autoloss",  # policy records: candidate probabilities, tau
        "optim__batch_size": 512,  # 5 steps an epoch
        "train__epochs": 2,
        "train__log_every": 2,
        "train__tracking": "tensorboard,mlflow",
        **over,
    }
    return small_cfg(data, out=str(out), **settings)


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def _expected(run: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as metrics.jsonl holds them (the module's documented names)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for rec in _records(run):
        prefix = rec["split"] if rec["type"] == "eval" else rec["type"]
        for key, value in rec.items():
            if key not in ("type", "split", "step") and isinstance(value, int | float):
                out.setdefault(f"{prefix}/{key}", []).append((rec["step"], float(value)))
    return out


def _tensorboard(run: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow(run: Path) -> tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    return client, (run / "mlflow_run_id").read_text().strip()


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    return [s for s, _ in got] == [s for s, _ in want] and all(
        g == pytest.approx(w, rel=1e-6, abs=1e-9) for (_, g), (_, w) in zip(got, want)
    )


def test_tensorboard_and_mlflow_hold_what_metrics_jsonl_and_config_yaml_hold(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train_run(_cfg(tiny_dataset, run), log=QUIET)
    want = _expected(run)
    assert {"valid/auc", "valid/logloss", "valid/train_loss", "policy/tau", "policy/p_ce"} <= set(
        want
    )
    final = json.loads((run / "result.json").read_text())

    board = _tensorboard(run)
    for tag, points in want.items():
        assert _same(board[tag], points), tag
    assert board["result/test/auc"] == [(final["steps"], pytest.approx(final["test"]["auc"]))]

    client, run_id = _mlflow(run)
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert got.data.params == tracking.config_params(config)
    assert (
        got.data.params["model.embed_dim"] == "8" and got.data.params["loss.method"] == "autoloss"
    )
    for tag, points in want.items():
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, tag)]
        assert _same(history, points), tag
    assert got.data.metrics["result/test/auc"] == pytest.approx(final["test"]["auc"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "result.json"} <= artifacts


@pytest.mark.parametrize(
    ("name", "module"), [("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")]
)
def test_a_missing_extra_is_one_line_before_anything_is_written(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    module: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_dataset), "--out", str(out), "--progress", "off",
            "--set", f"train.tracking={name}"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"autoloss train: error: train.tracking={name} needs the 'tracking' extra: "
        "pip install 'autoloss-rec[tracking]'\n"
    )
    assert not out.exists()


def test_an_unknown_tracker_is_refused_by_name(tiny_dataset: Path) -> None:
    from autoloss.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'train.tracking'.*tensorboard, mlflow"):
        small_cfg(tiny_dataset, train__tracking="wandb")


def test_a_resumed_run_continues_the_same_mlflow_run_and_tensorboard_log(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    cfg = _cfg(tiny_dataset, run, train__epochs=3)
    real, calls = Trainer._evaluate_and_track, {"n": 0}

    def interrupt_second(self: Trainer, *losses: float) -> bool:
        calls["n"] += 1
        if calls["n"] == 2:  # after epoch 2's policy records, before its evaluation
            raise KeyboardInterrupt
        return real(self, *losses)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_evaluate_and_track", interrupt_second)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, log=QUIET)
    client, run_id = _mlflow(run)
    assert client.get_run(run_id).info.status == "KILLED"
    logged = [m.step for m in client.get_metric_history(run_id, "policy/tau")]
    assert logged and max(logged) > 5  # epoch 2's records (5 steps an epoch), redone on resume

    train_run(cfg, resume=True, log=QUIET)
    client, same = _mlflow(run)
    assert same == run_id
    assert [
        r.info.run_id for r in client.search_runs([client.get_run(run_id).info.experiment_id])
    ] == [run_id]
    assert client.get_run(run_id).info.status == "FINISHED"
    want = _expected(run)
    board = _tensorboard(run)
    for tag, points in want.items():  # each step once: the redone records are not repeated
        history = [(m.step, m.value) for m in client.get_metric_history(run_id, tag)]
        assert _same(history, points), tag
        assert _same(board[tag], points), tag
    assert [s for s, _ in want["valid/auc"]] == [5, 10, 15]


def test_a_read_only_run_dir_is_not_tracked(tmp_path: Path) -> None:
    from autoloss.train.config import RunConfig
    from autoloss.train.rundir import RunDir

    cfg = RunConfig()
    cfg.train.tracking = ["tensorboard", "mlflow"]
    rd = RunDir(tmp_path / "run", read_only=True)  # a rank but 0 of a distributed run
    with tracking.tracked(rd, cfg) as got:
        assert got is rd


def test_record_and_result_names() -> None:
    rec = {"type": "eval", "split": "valid", "step": 7, "epoch": 1, "auc": 0.75, "note": "x"}
    assert tracking.record_scalars(rec) == {"valid/epoch": 1.0, "valid/auc": 0.75}
    pol = {"type": "policy", "step": 5, "rows": 640, "p_ce": 0.4, "tau": 1.0}
    assert tracking.record_scalars(pol) == {
        "policy/rows": 640.0,
        "policy/p_ce": 0.4,
        "policy/tau": 1.0,
    }
    result = {"test": {"auc": 0.8}, "steps": 9, "method": "ce", "policy": {"final": {"p_ce": 1}}}
    assert tracking.result_scalars(result) == {
        "result/test/auc": 0.8, "result/steps": 9.0, "result/policy/final/p_ce": 1.0,
    }  # fmt: skip
    params = tracking.config_params({"model": {"mlp": [32, 32], "extra": {}}, "out": None})
    assert params == {"model.mlp": "[32, 32]", "model.extra": "{}", "out": "null"}
