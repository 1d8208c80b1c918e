"""The controller's pieces: inputs, temperature schedule, Gumbel-softmax, BatchNorm handling."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from autoloss.errors import ConfigError
from autoloss.policies.autoloss import AutoLoss
from autoloss.policies.bilevel import BilevelSchedule
from autoloss.policies.config import LossConfig
from autoloss.policies.gumbel import (
    LossController,
    Temperature,
    controller_input,
    gumbel_softmax,
    temperature,
)
from autoloss.policies.registry import build_policy
from autoloss.policies.slf import SLFLoss


def test_controller_input_binary_and_multiclass() -> None:
    logits = torch.tensor([0.0, 2.0], requires_grad=True)
    x = controller_input(logits, torch.tensor([1, 0]))
    assert torch.allclose(x, torch.tensor([[1.0, 0.5], [0.0, torch.sigmoid(torch.tensor(2.0))]]))
    assert not x.requires_grad  # ŷ is detached
    ml = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    xm = controller_input(ml, torch.tensor([2, 0]))
    assert xm.shape == (2, 6)
    assert torch.equal(xm[:, :3], torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(xm[:, 3:], torch.softmax(ml, 1))


def test_temperature_schedule() -> None:
    assert temperature(0) == 1.0
    assert temperature(1000) == pytest.approx(0.95)
    assert temperature(10_000) == pytest.approx(0.5)
    assert temperature(19_800) == pytest.approx(0.01)
    assert temperature(10**6) == 0.01
    assert temperature(100, start=2.0, decay=0.01, minimum=0.5) == 1.0
    policy = AutoLoss("binary", tau_start=0.5, tau_decay=0.1, tau_min=0.2, hidden=(8,))
    assert [policy.selector.tau(t) for t in (0, 1, 2, 3)] == pytest.approx([0.5, 0.4, 0.3, 0.2])


BILEVEL = ("autoloss", "autoloss-soft", "darts")
GUMBEL = ("autoloss", "autoloss-soft", "slf")


@pytest.mark.parametrize(
    ("over", "methods"),
    [
        ({"mode": "zeroth"}, BILEVEL),
        ({"unrolled_impl": "magic"}, BILEVEL),
        ({"mode": "unrolled", "xi": 0.0}, BILEVEL),
        ({"update_every": 0}, BILEVEL),
        ({"controller_lr": 0.0}, (*BILEVEL, "slf")),
        ({"tau_min": 0.0}, GUMBEL),
        ({"tau_start": 0.001}, GUMBEL),
        ({"tau_decay": -1.0}, GUMBEL),
        ({"controller_dropout": 1.0}, GUMBEL),
        ({"controller_hidden": [0]}, GUMBEL),
    ],
)
def test_invalid_settings_are_config_errors(over: dict[str, Any], methods: tuple[str, ...]) -> None:
    for method in methods:
        with pytest.raises(ConfigError, match=f"loss.{list(over)[-1]}"):
            build_policy(LossConfig(method=method, **over), "binary")


def test_schedules_validate_on_construction() -> None:
    with pytest.raises(ConfigError, match="loss.tau_min must be > 0"):
        Temperature(1.0, 0.1, 0.0)
    with pytest.raises(ConfigError, match=r"loss.tau_start \(0.001\) must be >= loss.tau_min"):
        Temperature(0.001, 0.1, 0.01)
    with pytest.raises(ConfigError, match="loss.tau_decay must be >= 0"):
        Temperature(1.0, -1.0, 0.01)
    for kw, msg in (
        ({"mode": "zeroth"}, "loss.mode 'zeroth'"),
        ({"unrolled_impl": "magic"}, "loss.unrolled_impl 'magic'"),
        ({"mode": "unrolled", "xi": float("nan")}, "loss.xi must be > 0"),
        ({"update_every": 0}, "loss.update_every must be >= 1"),
        ({"lr": -1.0}, "loss.controller_lr must be > 0"),
    ):
        with pytest.raises(ConfigError, match=msg):
            BilevelSchedule(**kw)  # type: ignore[arg-type]
    assert BilevelSchedule("first-order", xi=0.0).xi == 0.0  # ξ is unused in first-order mode


def test_multiclass_needs_num_classes_and_sizes_the_controller() -> None:
    for bad in (None, 1):
        with pytest.raises(ConfigError, match="num_classes >= 2"):
            AutoLoss("multiclass", bad)
        with pytest.raises(ConfigError, match="num_classes >= 2"):
            SLFLoss("multiclass", bad)
    policy = build_policy(LossConfig(method="autoloss", controller_hidden=[8]), "multiclass", 5)
    assert isinstance(policy, AutoLoss) and policy.num_classes == 5
    assert policy.controller.in_dim == 10 and policy.controller.linears[0].in_features == 10
    assert AutoLoss("binary", 7).controller.in_dim == 2  # binary: [y, sigmoid(s)], whatever n
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    alpha = policy.probabilities(logits, y)
    assert alpha.shape == (6, 4) and torch.allclose(alpha.sum(1), torch.ones(6))
    assert policy(logits, y).shape == ()


@pytest.mark.parametrize("method", ["slf", "darts", "uniform", "ce", "weights:1,1,1,1"])
def test_controller_option_only_for_autoloss(method: str) -> None:
    name = method.split(":")[0]
    with pytest.raises(ConfigError, match=f"autoloss / autoloss-soft / reweight, not {name}$"):
        build_policy(LossConfig(method=method, controller="ctrl.pt"), "binary")


def test_gumbel_samples_on_simplex() -> None:
    torch.manual_seed(0)
    log_alpha = torch.log_softmax(torch.randn(500, 4), dim=1)
    for tau in (1.0, 0.3, 0.01):
        p = gumbel_softmax(log_alpha, tau)
        assert bool((p >= 0).all())
        assert torch.allclose(p.sum(1), torch.ones(500), atol=1e-5)
    # low temperature -> nearly one-hot; sample frequencies follow α
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.4])
    p = gumbel_softmax(alpha.log().expand(20000, -1), 0.01)
    assert float(p.max(1).values.min()) > 0.5
    freq = torch.bincount(p.argmax(1), minlength=4).float() / 20000
    assert torch.allclose(freq, alpha, atol=0.02)


def test_hard_gumbel_is_one_hot_with_straight_through_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, 4, requires_grad=True)
    p = gumbel_softmax(torch.log_softmax(logits, 1), 0.5, hard=True)
    assert torch.equal(p.detach().sum(1), torch.ones(8))
    assert set(p.detach().unique().tolist()) <= {0.0, 1.0}
    (p * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_controller_forward_outside_its_own_step_changes_nothing() -> None:
    torch.manual_seed(0)
    net = LossController(4, 2, (8, 8), 0.5)
    x = torch.rand(32, 2)
    before = net.norms[0].running_mean.clone()
    a = net(x, learn=False)
    assert torch.equal(net.norms[0].running_mean, before)
    assert torch.allclose(a.sum(1), torch.ones(32))
    assert torch.equal(net(x, learn=False), a)  # no dropout: deterministic
    assert not torch.equal(net(x, learn=True), a)  # dropout active when learning
    assert not torch.equal(net.norms[0].running_mean, before)
    assert net(x[:1]).shape == (1, 4)  # a batch of one uses the running statistics


def test_autoloss_soft_returns_alpha_and_stats_report_tau() -> None:
    torch.manual_seed(0)
    soft = build_policy(LossConfig(method="autoloss-soft", controller_hidden=[8]), "binary")
    hard = build_policy(LossConfig(method="autoloss", controller_hidden=[8], hard=True), "binary")
    assert isinstance(soft, AutoLoss) and isinstance(hard, AutoLoss)
    logits, y = torch.randn(16), torch.randint(0, 2, (16,))
    losses = soft.candidate_set(logits, y)
    w = soft.weights(logits, y, losses, 2000)
    assert torch.allclose(w.sum(1), torch.ones(16), atol=1e-6) and bool((w > 0).all())
    assert torch.allclose(w, soft.probabilities(logits, y))  # α itself, no noise
    wh = hard.weights(logits, y, losses, 2000)
    assert torch.equal(wh.sum(1), torch.ones(16)) and set(wh.unique().tolist()) <= {0.0, 1.0}
    # a training call at recommender step 2000 (the criterion counts its calls)
    hard.num_steps = soft.num_steps = 2000
    fix = wh.clone()
    hard.selector.noise = lambda la: torch.where(fix > 0, 1e3, 0.0)  # type: ignore[assignment]
    loss = hard(logits, y)
    assert hard.num_steps == 2001
    assert float(loss) == pytest.approx(float((fix * losses).sum(1).mean()), rel=1e-6)
    stats = hard.stats()
    assert stats["tau"] == pytest.approx(0.9)
    assert {"p_ce", "p_ce_y0", "p_ce_y1", "alpha_focal"} <= set(stats)
    assert stats["p_ce"] == pytest.approx(float(fix[:, 3].mean()))
    assert stats["p_ce_y1"] == pytest.approx(float(fix[y == 1, 3].mean()))
    soft(logits, y)
    assert "tau" not in soft.stats()
    # eval-mode calls do not advance the step counter
    soft.eval()
    soft(logits, y)
    assert soft.num_steps == 2001


def test_fixed_policies_never_learn() -> None:
    logits, y = torch.randn(8), torch.randint(0, 2, (8,))
    for method, w in (("uniform", [0.25] * 4), ("weights:1,0,0,3", [1.0, 0.0, 0.0, 3.0])):
        policy = build_policy(LossConfig(method=method), "binary")
        assert policy.update_every == 0 and not policy.uses_validation
        assert not any(policy.should_update(s) for s in range(50)) and policy.update() == {}
        losses = policy.candidate_set(logits, y)
        assert torch.equal(policy.probabilities(logits, y), torch.tensor(w).expand(8, -1))
        assert float(policy(logits, y)) == pytest.approx(float((losses @ torch.tensor(w)).mean()))
    single = build_policy(LossConfig(method="focal"), "binary")
    assert single.candidates == ("focal",) and single.name == "focal"


def test_eval_mode_calls_leave_the_logged_statistics_alone() -> None:
    torch.manual_seed(0)
    policy = AutoLoss("binary", hidden=(8,), gumbel=False)
    logits, y = torch.randn(16), torch.randint(0, 2, (16,))
    alpha = policy.probabilities(logits, y)
    policy(logits, y)
    policy.eval()
    policy(5 * logits, y)  # e.g. a validation loss in a hand-written loop
    assert policy.num_steps == 1
    stats = policy.stats()
    assert stats["p_ce"] == pytest.approx(float(alpha[:, 3].mean()))
    assert stats["alpha_ce"] == pytest.approx(float(alpha[:, 3].mean()))


def test_candidate_options_reach_every_policy_from_the_config() -> None:
    cfg = LossConfig(method="autoloss", candidates=["ce", "gce", "tce"], gce_q=0.5, tce_drop=0.3)
    for method in ("uniform", "darts", "slf", "autoloss"):
        cs = build_policy(replace(cfg, method=method), "binary").candidate_set
        assert cs.names == ("ce", "gce", "tce") and cs.gce_q == 0.5 and cs.tce_drop == 0.3, method
    # a prebuilt set is used as it is by the public constructors
    from autoloss.losses import candidate_losses

    cs = candidate_losses("ce,gce", "binary", gce_q=0.3)
    assert AutoLoss(task="binary", candidates=cs).candidate_set is cs
    with pytest.raises(ConfigError, match="multiclass"):
        AutoLoss(task="multiclass", num_classes=3, candidates=cs)
