"""AutoLoss through the real trainer: schedules, logged statistics, saved and transferred controllers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from policy_testkit import QUIET, run_cfg

import autoloss.train.trainer as trainer_mod
from autoloss.cli import main
from autoloss.errors import CheckpointError
from autoloss.policies.autoloss import AutoLoss
from autoloss.policies.gumbel import load_controller
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer
from encoded_fixtures import write_encoded_dataset


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """One short autoloss run (binary tiny data) with its run directory."""
    root = tmp_path_factory.mktemp("autoloss-run")
    data = write_encoded_dataset(root / "tiny")
    cfg = run_cfg(data, out=str(root / "run"), train__log_every=10)
    run_dir, result = train_run(cfg, log=QUIET)
    return data, run_dir, result


def test_update_called_every_f_steps(tiny_dataset: Path) -> None:
    trainer = Trainer(run_cfg(tiny_dataset, loss__update_every=5, train__max_steps=17), log=QUIET)
    policy = trainer.policy
    assert [s for s in range(17) if policy.should_update(s)] == [4, 9, 14]
    steps: list[int] = []
    real = policy.update

    def spy(model: Any, x_valid: Any, y_valid: Any, **kw: Any) -> dict[str, float]:
        steps.append(policy.num_steps)  # recommender steps taken so far
        assert model is trainer.model and isinstance(x_valid, tuple)
        assert 0 < len(y_valid) <= 128  # a validation mini-batch (training batch size)
        x, y, rows = kw["train_batch"]
        assert isinstance(x, tuple) and len(x[0]) == len(y) == len(rows) == 128
        assert len(kw["valid_rows"]) == len(y_valid)
        assert callable(kw["regularization"])
        return real(model, x_valid, y_valid, **kw)

    policy.update = spy  # type: ignore[method-assign]
    trainer.fit()
    assert steps == [5, 10, 15] and policy.updates == 3 and policy.num_steps == 17


def test_run_records_controller_and_policy_statistics(
    trained_run: tuple[Path, Path, dict[str, Any]],
) -> None:
    _, run_dir, result = trained_run
    assert result["policy"]["mode"] == "first-order" and result["policy"]["controller_updates"] == 2
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    policy = [r for r in recs if r["type"] == "policy"]
    assert [r["step"] for r in policy] == [10]
    rec = policy[0]
    assert rec["tau"] == pytest.approx(1 - 5e-5 * 9)
    for key in (
        "p_focal",
        "p_kl",
        "p_hinge",
        "p_ce",
        "p_ce_y0",
        "p_ce_y1",
        "alpha_ce",
        "controller_objective_avg",
    ):
        assert key in rec, key
    assert sum(rec[f"p_{n}"] for n in ("focal", "kl", "hinge", "ce")) == pytest.approx(
        1.0, abs=1e-5
    )
    state = torch.load(run_dir / "controller.pt", weights_only=True)
    assert state["candidates"] == ["focal", "kl", "hinge", "ce"]
    assert (state["task"], state["num_classes"], state["input_dim"]) == ("binary", 2, 2)
    assert state["hidden"] == [16, 16] and state["method"] == "autoloss"


def test_frozen_controller_is_bit_identical_and_draws_no_validation(
    trained_run: tuple[Path, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, run_dir, _ = trained_run
    saved = torch.load(run_dir / "controller.pt", weights_only=True)["state_dict"]

    def no_valid_stream(*a: Any, **k: Any) -> None:
        raise AssertionError("a frozen controller must not draw validation batches")

    monkeypatch.setattr(trainer_mod, "_ValidStream", no_valid_stream)
    cfg = run_cfg(
        data, model__name="fm", loss__controller=str(run_dir / "controller.pt"), train__epochs=2
    )
    trainer = Trainer(cfg, log=QUIET)
    policy = trainer.policy
    assert isinstance(policy, AutoLoss) and policy.frozen and policy.update_every == 0
    assert all(not p.requires_grad for p in policy.parameters())
    result = trainer.fit()
    assert result["policy"]["frozen"] is True
    after = policy.controller.state_dict()
    for k, v in saved.items():
        assert torch.equal(after[k], v), k
    assert not policy.controller.training


def test_mismatched_or_corrupt_controller_refused(
    trained_run: tuple[Path, Path, dict[str, Any]],
    tiny_multiclass_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, run_dir, _ = trained_run
    path = str(run_dir / "controller.pt")
    with pytest.raises(CheckpointError, match="candidates focal,kl,hinge,ce"):
        Trainer(run_cfg(data, loss__controller=path, loss__candidates="ce,focal"), log=QUIET)
    with pytest.raises(CheckpointError, match="binary task; this run is multiclass"):
        Trainer(run_cfg(tiny_multiclass_dataset, loss__controller=path), log=QUIET)
    with pytest.raises(CheckpointError, match="trained for 2 classes; this dataset has 3"):
        load_controller(path).check_compatible(
            task="binary", candidates=["focal", "kl", "hinge", "ce"], num_classes=3
        )
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_controller(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not an autoloss controller"):
        load_controller(other)
    code = main(
        ["train", "--data", str(data), "--controller", str(bad), "--out", str(tmp_path / "r")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bad.pt" in err
    assert not (tmp_path / "r").exists()


def test_loaded_controller_alpha(trained_run: tuple[Path, Path, dict[str, Any]]) -> None:
    ctrl = load_controller(trained_run[1] / "controller.pt")
    y, probs = torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.5, 0.9])
    a = ctrl.alpha(y, probs)
    assert a.shape == (3, 4) and torch.allclose(a.sum(1), torch.ones(3))
    # the transferred criterion's α is the saved controller's
    crit = AutoLoss("binary", controller=trained_run[1] / "controller.pt")
    assert torch.allclose(crit.probabilities(torch.logit(probs), y), a, atol=1e-6)
    assert (
        ctrl.task == "binary"
        and ctrl.num_classes == 2
        and ctrl.candidates == ["focal", "kl", "hinge", "ce"]
    )


@pytest.mark.parametrize("method", ["autoloss", "slf"])
def test_multiclass_controller_sizes_itself_from_the_data(
    tiny_multiclass_dataset: Path, tmp_path: Path, method: str
) -> None:
    cfg = run_cfg(
        tiny_multiclass_dataset, loss__method=method, out=str(tmp_path / "run"), train__max_steps=15
    )
    run_dir, _result = train_run(cfg, log=QUIET)
    state = torch.load(run_dir / "controller.pt", weights_only=True)
    assert (state["task"], state["num_classes"], state["input_dim"]) == ("multiclass", 5, 10)
    ctrl = load_controller(run_dir / "controller.pt")
    assert ctrl.alpha(torch.tensor([4]), torch.full((1, 5), 0.2)).shape == (1, 4)


def test_policy_state_with_optimizer_round_trips_weights_only(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    trainer = Trainer(run_cfg(tiny_dataset, train__max_steps=15), log=QUIET)
    trainer.fit()
    path = tmp_path / "policy.pt"
    torch.save(trainer.policy.state_dict(), path)
    state = torch.load(path, weights_only=True)
    fresh = Trainer(run_cfg(tiny_dataset), log=QUIET).policy
    fresh.load_state_dict(state)
    assert isinstance(fresh, AutoLoss) and fresh.updates == 2 and fresh.num_steps == 15
    for k, v in trainer.policy.state_dict().items():
        if torch.is_tensor(v):
            assert torch.equal(fresh.state_dict()[k], v), k
    opt = fresh.policy_optimizer.get().state_dict()
    assert len(opt["state"]) == len(list(fresh.controller.parameters()))
    assert int(opt["state"][0]["step"]) == 2
    assert opt["state"][0]["exp_avg"].equal(
        trainer.policy.policy_optimizer.get().state_dict()["state"][0]["exp_avg"]
    )


@pytest.mark.parametrize(
    "method",
    [
        "slf",
        "darts",
        "autoloss",
        "reweight",
    ],
)
def test_resumed_run_matches_uninterrupted(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    def cfg(name: str) -> Any:
        out = str(tmp_path / name)
        return run_cfg(tiny_dataset, loss__method=method, train__epochs=2, out=out)

    _, expected = train_run(cfg("full"), log=QUIET)
    original = Trainer._evaluate_and_track
    calls = [0]

    def interrupt_second(self: Trainer, *losses: float) -> bool:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return original(self, *losses)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_evaluate_and_track", interrupt_second)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg("cut"), log=QUIET)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["policy"]["_extra_state"]["num_steps"] == state["position"]["step"] == 19
    _, resumed = train_run(cfg("cut"), resume=True, log=QUIET)
    assert resumed["test"] == expected["test"] and resumed["policy"] == expected["policy"]
    models = [torch.load(tmp_path / r / "model.pt", weights_only=True) for r in ("full", "cut")]
    for k, v in models[0]["state_dict"].items():
        assert torch.equal(models[1]["state_dict"][k], v), k
    if method == "darts":
        return  # no controller.pt: its global weights are compared in result["policy"]
    saved = [torch.load(tmp_path / r / "controller.pt", weights_only=True) for r in ("full", "cut")]
    for k, v in saved[0]["state_dict"].items():
        assert torch.equal(saved[1]["state_dict"][k], v), k
