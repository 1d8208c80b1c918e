"""SLF (single level): the decision network learns from the training loss's own backward pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from policy_testkit import (
    QUIET,
    assert_same_state,
    batch,
    fix_noise,
    gumbel_noise,
    run_cfg,
    state_copy,
)

import autoloss.train.trainer as trainer_mod
from autoloss.policies.gumbel import controller_input, gumbel_softmax
from autoloss.policies.slf import SLFLoss
from autoloss.train.trainer import Trainer


def test_slf_weights_carry_normalised_gradient_to_the_decision_network() -> None:
    torch.manual_seed(0)
    policy = SLFLoss("binary", hidden=(16, 16), dropout=0.0)
    assert not policy.uses_validation and policy.should_update(0) and policy.should_update(1)
    noise = gumbel_noise(32, 4)
    fix_noise(policy, noise)
    b = batch(32, seed=3)
    logits = torch.randn(32, requires_grad=True)
    losses = policy.candidate_set(logits, b.y).detach()
    # the Gumbel sample p that the loss uses (decision network in training mode, batch statistics)
    log_alpha = policy.decision.log_alpha(controller_input(logits, b.y))
    p = gumbel_softmax(log_alpha, policy.selector.tau(0), noise=noise)
    assert torch.allclose(p.detach().sum(1), torch.ones(32), atol=1e-6)
    policy.zero_grad()
    loss = policy(logits, b.y)
    assert float(loss.detach()) == pytest.approx(
        float((p.detach() * losses).sum(1).mean()), rel=1e-6
    )
    assert policy.num_steps == 1
    loss.backward()
    # the recommender sees sum_k p_k dl_k: same as with constant weights
    ref_logits = logits.detach().clone().requires_grad_()
    (p.detach() * policy.candidate_set(ref_logits, b.y)).sum(1).mean().backward()
    assert logits.grad is not None and ref_logits.grad is not None
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-7)
    # the decision network sees the losses divided by their running scale (first batch: its mean)
    scale = losses.mean(0)
    assert torch.allclose(policy.loss_scale, scale) and int(policy.scale_steps) == 1
    grads = {n: q.grad.clone() for n, q in policy.decision.named_parameters() if q.grad is not None}
    policy.zero_grad()
    (p * losses / scale).sum(1).mean().backward()
    for n, q in policy.decision.named_parameters():
        assert q.grad is not None and torch.allclose(q.grad, grads[n], atol=1e-6), n
    # update(): one Adam step on those gradients, then the gradients are cleared
    before = state_copy(policy.decision)
    assert policy.update() == {}
    for n, q in policy.decision.named_parameters():
        assert q.grad is None and not torch.equal(q, before[n]), n
    after = state_copy(policy.decision)
    policy.update()  # no gradients: nothing to do
    assert_same_state(policy.decision, after)


def test_slf_scale_is_a_running_mean_and_state_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = SLFLoss("binary", hidden=(8,))
    logits, y = torch.randn(2, 16), torch.randint(0, 2, (2, 16))
    first = policy.candidate_set(logits[0], y[0]).mean(0)
    second = policy.candidate_set(logits[1], y[1]).mean(0)
    for i in range(2):
        policy(logits[i].clone().requires_grad_(), y[i]).backward()
        policy.update()
    assert torch.allclose(policy.loss_scale, 0.99 * first + 0.01 * second)
    fresh = SLFLoss("binary", hidden=(8,))
    torch.save(policy.state_dict(), tmp_path / "slf.pt")
    fresh.load_state_dict(torch.load(tmp_path / "slf.pt", weights_only=True))
    assert fresh.num_steps == 2 and int(fresh.scale_steps) == 2
    assert torch.equal(fresh.loss_scale, policy.loss_scale)
    opt = fresh.policy_optimizer.get().state_dict()
    assert len(opt["state"]) == len(list(fresh.decision.parameters()))
    assert int(opt["state"][0]["step"]) == 2


def test_slf_eval_mode_calls_leave_the_loss_scale_alone() -> None:
    torch.manual_seed(0)
    policy = SLFLoss("binary", hidden=(8,))
    logits, y = torch.randn(16), torch.randint(0, 2, (16,))
    policy(logits, y)
    before = state_copy(policy)
    policy.eval()
    policy(5 * logits, y)  # e.g. a validation loss in a hand-written loop
    assert policy.num_steps == 1
    assert_same_state(policy, before)


def test_slf_trains_jointly(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_valid_stream(*a: Any, **k: Any) -> None:
        raise AssertionError("SLF must not draw validation batches")

    monkeypatch.setattr(trainer_mod, "_ValidStream", no_valid_stream)
    trainer = Trainer(run_cfg(tiny_dataset, loss__method="slf", train__epochs=1), log=QUIET)
    policy = trainer.policy
    assert isinstance(policy, SLFLoss) and policy.update_every == 1
    before = {k: v.clone() for k, v in policy.decision.state_dict().items()}
    result = trainer.fit()
    assert result["test"]["auc"] > 0.6
    moved = [k for k, v in policy.decision.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.weight" in moved and "linears.0.weight" in moved
    assert set(result["policy"]["loss_scale"]) == {"focal", "kl", "hinge", "ce"}
    assert policy.num_steps == result["steps"] == int(policy.scale_steps)
