"""AutoLoss variants: richer controller inputs and a τ annealed over the run's planned steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from policy_testkit import run_cfg

from autoloss.errors import CheckpointError, ConfigError
from autoloss.losses import candidate_losses
from autoloss.policies.autoloss import AutoLoss
from autoloss.policies.gumbel import ControllerInputs, controller_input, load_controller
from autoloss.report.policy_map import PolicyMapUnavailable, compute_policy_map
from autoloss.train.run import train_run

QUIET: Any = lambda s: None  # noqa: E731


def test_default_inputs_are_the_papers() -> None:
    s, y = torch.tensor([0.5, -2.0]), torch.tensor([1, 0])
    assert torch.equal(ControllerInputs()(s, y, 7), controller_input(s, y))


def test_extra_inputs_binary_by_hand() -> None:
    cs = candidate_losses("ce,hinge", "binary")
    inputs = ControllerInputs(
        ("label", "prediction", "losses", "margin", "progress"), 2, cs, total_steps=40
    )
    s, y = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([1, 1])
    x = inputs(s, y, 10)
    assert inputs.width == x.shape[1] == 2 + 2 + 1 + 1
    ce = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(-1.0))]
    hinge = [0.0, 0.0]
    expected = [
        [1.0, 1 / (1 + math.exp(-2.0)), math.log1p(ce[0]), math.log1p(hinge[0]), math.tanh(0.5), 0.25],
        [1.0, 1 / (1 + math.exp(-1.0)), math.log1p(ce[1]), math.log1p(hinge[1]), math.tanh(0.25), 0.25],
    ]  # fmt: skip
    torch.testing.assert_close(x, torch.tensor(expected, dtype=torch.float64))
    assert float(inputs(s, y, 100)[0, -1]) == 1.0  # progress saturates at 1


def test_multiclass_margin() -> None:
    inputs = ControllerInputs(("label", "prediction", "margin"), 3)
    s = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.5, 0.5]])
    x = inputs(s, torch.tensor([1, 2]), 0)
    torch.testing.assert_close(x[:, -1], torch.tanh(torch.tensor([2.0, -1.5]) / 4))


@pytest.mark.parametrize(
    ("names", "kw", "msg"),
    [
        (("label", "prediction", "memory"), {}, "names from"),
        (("prediction", "label"), {}, "start with label,prediction"),
        (("label", "prediction", "progress"), {}, "planned steps"),
        (("label", "prediction", "margin", "margin"), {}, "each once"),
    ],
)
def test_invalid_inputs(names: tuple[str, ...], kw: dict[str, Any], msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        ControllerInputs(names, 2, **kw)


def test_tau_anneal_reaches_the_minimum_at_the_planned_fraction() -> None:
    crit = AutoLoss(task="binary", tau_anneal=0.5, total_steps=1000, tau_min=0.05)
    tau = crit.selector.tau
    assert tau(0) == 1.0 and tau(250) == pytest.approx(0.525) and tau(500) == pytest.approx(0.05)
    assert tau(900) == 0.05
    with pytest.raises(ConfigError, match="planned steps"):
        AutoLoss(task="binary", tau_anneal=0.5)


def test_a_run_with_the_variants_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = run_cfg(
        tiny_dataset,
        loss__method="autoloss",
        loss__controller_inputs="label,prediction,losses,margin,progress",
        loss__tau_anneal=1.0,
        train__epochs=2,
        out=str(tmp_path / "r"),
    )
    run_dir, result = train_run(cfg, log=QUIET)
    pol = result["policy"]
    assert pol["controller_inputs"] == ["label", "prediction", "losses", "margin", "progress"]
    assert pol["tau_final"] < 0.05  # annealed to tau_min over the run (planned = epochs x steps)
    ctrl = load_controller(run_dir / "controller.pt")
    assert ctrl.inputs == tuple(pol["controller_inputs"]) and ctrl.network.in_dim == 2 + 4 + 1 + 1
    with pytest.raises(PolicyMapUnavailable, match="also sees"):
        compute_policy_map(run_dir / "controller.pt")
    with pytest.raises(CheckpointError, match="inputs"):
        AutoLoss(task="binary", controller=run_dir / "controller.pt")  # default inputs differ
    frozen = AutoLoss(
        task="binary",
        controller=run_dir / "controller.pt",
        inputs=ctrl.inputs,
        total_steps=100,
    )
    assert frozen.frozen and frozen.probabilities(
        torch.zeros(3), torch.tensor([0, 1, 1])
    ).shape == (3, 4)


def test_loss_history_reads_the_previous_visit() -> None:
    from autoloss.policies.gumbel import LossHistory

    h = LossHistory(5, 3)
    rows = torch.tensor([1, 3])
    assert torch.equal(h.features("train", rows), torch.zeros(2, 2))  # never seen
    logits, y = torch.tensor([0.0, 2.0]), torch.tensor([1, 0])
    h.stage("train", rows, logits, y)
    assert torch.equal(h.features("train", rows), torch.zeros(2, 2))  # staged, not yet visible
    h.commit()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float(), reduction="none")
    torch.testing.assert_close(
        h.features("train", rows), torch.stack([torch.log1p(ce), torch.ones(2)], 1)
    )
    assert torch.isnan(h.prev_valid).all()  # the valid memory is separate


def test_history_input_in_a_hand_written_loop() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    crit = AutoLoss(
        task="binary",
        inputs=("label", "prediction", "history"),
        split_rows=(40, 40),
        mode="unrolled",
        update_every=1,
    )
    with pytest.raises(ValueError, match="rows"):
        crit(model(x).squeeze(1), y)
    net = torch.nn.Sequential(model, torch.nn.Flatten(0))
    rows = torch.arange(20)
    for _ in range(2):
        crit(net(x[:20]), y[:20], rows=rows)
        crit.update(net, x[20:], y[20:], train_batch=(x[:20], y[:20], rows), valid_rows=rows)
    mem = crit.selector.history
    assert mem is not None and not torch.isnan(mem.prev_train[:20]).any()
    assert torch.isnan(mem.prev_train[20:]).all()


def test_history_runs_resume_exactly(tiny_dataset: Path, tmp_path: Path) -> None:
    from autoloss.train.trainer import Trainer

    def cfg(name: str, mode: str) -> Any:
        return run_cfg(
            tiny_dataset,
            loss__method="autoloss",
            loss__mode=mode,
            loss__controller_inputs="label,prediction,history",
            train__epochs=2,
            out=str(tmp_path / name),
        )

    real = Trainer._evaluate_and_track

    def cut(self: Trainer, *losses: float) -> bool:
        if self.epoch == 2:
            raise KeyboardInterrupt
        return real(self, *losses)

    for mode in ("first-order", "unrolled"):
        _, full = train_run(cfg(f"full-{mode}", mode), log=QUIET)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(Trainer, "_evaluate_and_track", cut)
            with pytest.raises(KeyboardInterrupt):
                train_run(cfg(f"cut-{mode}", mode), log=QUIET)
        _, resumed = train_run(cfg(f"cut-{mode}", mode), resume=True, log=QUIET)
        assert resumed["test"] == full["test"] and resumed["policy"] == full["policy"], mode
        state = torch.load(tmp_path / f"full-{mode}" / "controller.pt", weights_only=True)
        assert state["inputs"] == ["label", "prediction", "history"]
