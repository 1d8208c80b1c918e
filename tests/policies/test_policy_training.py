"""AutoLoss through the real trainer: schedules, logged statistics, saved and transferred controllers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from policy_testkit import run_cfg

import autoloss.train.trainer as trainer_mod
from autoloss.cli import main
from autoloss.errors import CheckpointError
from autoloss.policies.controller import AutoLossPolicy, load_controller
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer

QUIET: Any = lambda s: None  # noqa: E731


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """One short autoloss run (binary tiny data) with its run directory."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from encoded_fixtures import write_encoded_dataset

    root = tmp_path_factory.mktemp("autoloss-run")
    data = write_encoded_dataset(root / "tiny")
    cfg = run_cfg(data, out=str(root / "run"), train__log_every=10)
    run_dir, result = train_run(cfg, log=QUIET)
    return data, run_dir, result


def test_update_called_every_f_steps(tiny_dataset: Path) -> None:
    trainer = Trainer(run_cfg(tiny_dataset, loss__update_every=5, train__max_steps=17), log=QUIET)
    steps: list[int] = []
    real = trainer.policy.update

    def spy(ctx: Any) -> dict[str, float]:
        steps.append(ctx.step)
        assert 0 < len(ctx.valid_batch) <= 128  # a validation mini-batch (training batch size)
        return real(ctx)

    trainer.policy.update = spy  # type: ignore[method-assign]
    trainer.fit()
    assert steps == [5, 10, 15]


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
    assert isinstance(policy, AutoLossPolicy) and policy.frozen and policy.update_every == 0
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
    a = ctrl.alpha(torch.tensor([0, 1, 1]), torch.tensor([0.1, 0.5, 0.9]))
    assert a.shape == (3, 4) and torch.allclose(a.sum(1), torch.ones(3))
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
    assert isinstance(fresh, AutoLossPolicy) and fresh.updates == 2
    opt = fresh.policy_optimizer.get().state_dict()
    assert len(opt["state"]) == len(list(fresh.controller.parameters()))
