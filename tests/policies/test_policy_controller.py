"""The controller's pieces: inputs, temperature schedule, Gumbel-softmax, BatchNorm handling."""

from __future__ import annotations

import pytest
import torch

from autoloss.errors import ConfigError
from autoloss.policies import build_policy
from autoloss.policies.controller import (
    AutoLossPolicy,
    LossController,
    controller_input,
    gumbel_softmax,
    temperature,
)
from autoloss.train.config import LossConfig


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
    cfg = LossConfig(tau_start=0.5, tau_decay=0.1, tau_min=0.2)
    policy = AutoLossPolicy(
        build_policy(LossConfig(method="uniform"), "binary").candidates, cfg, "binary"
    )
    assert [policy.tau(t) for t in (0, 1, 2, 3)] == pytest.approx([0.5, 0.4, 0.3, 0.2])


def test_invalid_settings_are_config_errors() -> None:
    for over in (
        {"mode": "zeroth"},
        {"unrolled_impl": "magic"},
        {"mode": "unrolled", "xi": 0.0},
        {"update_every": 0},
        {"tau_min": 0.0},
        {"controller_dropout": 1.0},
    ):
        with pytest.raises(ConfigError):
            build_policy(LossConfig(method="autoloss", **over), "binary")  # type: ignore[arg-type]


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


def test_lazy_controller_for_multiclass_materialises() -> None:
    net = LossController(4, None, (8,), 0.0)
    assert not net.materialized and net.in_dim is None
    net.materialize(10)
    assert net.materialized and net.in_dim == 10
    assert net(torch.rand(3, 10)).shape == (3, 4)


def test_autoloss_soft_returns_alpha_and_stats_report_tau() -> None:
    torch.manual_seed(0)
    soft = build_policy(LossConfig(method="autoloss-soft", controller_hidden=[8]), "binary")
    hard = build_policy(LossConfig(method="autoloss", controller_hidden=[8], hard=True), "binary")
    from autoloss.policies.base import PolicyInput

    inp = PolicyInput(torch.randn(16), torch.randint(0, 2, (16,)), torch.rand(16, 4), 2000)
    w = soft.weights(inp)
    assert torch.allclose(w.sum(1), torch.ones(16), atol=1e-6) and bool((w > 0).all())
    wh = hard.weights(inp)
    assert torch.equal(wh.sum(1), torch.ones(16)) and set(wh.unique().tolist()) <= {0.0, 1.0}
    stats = hard.stats(inp, wh)
    assert stats["tau"] == pytest.approx(0.9)
    assert {"p_ce", "p_ce_y0", "p_ce_y1", "alpha_focal"} <= set(stats)
    assert "tau" not in soft.stats(inp, w)
