"""SLF (single level) and the searched-weights baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from policy_testkit import batch, candidates, loss_cfg, run_cfg

from autoloss.errors import ConfigError
from autoloss.policies.base import PolicyInput
from autoloss.policies.controller import controller_input, gumbel_softmax
from autoloss.policies.search import SearchedWeights, simplex_weights
from autoloss.policies.slf import SLFPolicy
from autoloss.train.trainer import Trainer

QUIET: Any = lambda s: None  # noqa: E731


def test_slf_weights_carry_normalised_gradient_to_the_decision_network() -> None:
    torch.manual_seed(0)
    policy = SLFPolicy(candidates(), loss_cfg(controller_dropout=0.0), "binary")
    noise = -torch.log(-torch.log(torch.rand(32, 4)))
    policy.gumbel_noise = lambda la: noise  # type: ignore[method-assign]
    b = batch(32, seed=3)
    logits = torch.randn(32, requires_grad=True)
    losses = policy.candidates(logits, b.y)
    w = policy.weights(PolicyInput(logits, b.y, losses, 0))
    # the value is the Gumbel sample on the simplex
    assert torch.allclose(w.detach().sum(1), torch.ones(32), atol=1e-6)
    loss = (w * losses).sum(1).mean()
    loss.backward()
    # the recommender sees sum_k p_k dl_k: same as with constant weights
    ref_logits = logits.detach().clone().requires_grad_()
    (w.detach() * policy.candidates(ref_logits, b.y)).sum(1).mean().backward()
    assert logits.grad is not None and ref_logits.grad is not None
    assert torch.allclose(logits.grad, ref_logits.grad, atol=1e-7)
    # the decision network sees the losses divided by their running scale (first batch: its mean)
    scale = losses.detach().mean(0)
    grads = {n: q.grad.clone() for n, q in policy.decision.named_parameters() if q.grad is not None}
    policy.zero_grad()
    log_alpha = policy.decision.log_alpha(controller_input(logits, b.y))
    p = gumbel_softmax(log_alpha, policy.tau(0), noise=noise)
    (p * losses.detach() / scale).sum(1).mean().backward()
    for n, q in policy.decision.named_parameters():
        assert q.grad is not None and torch.allclose(q.grad, grads[n], atol=1e-6), n


def test_slf_trains_jointly(tiny_dataset: Path) -> None:
    trainer = Trainer(run_cfg(tiny_dataset, loss__method="slf", train__epochs=1), log=QUIET)
    policy = trainer.policy
    assert isinstance(policy, SLFPolicy) and policy.update_every == 0
    before = {k: v.clone() for k, v in policy.decision.state_dict().items()}
    result = trainer.fit()
    assert result["test"]["auc"] > 0.6
    moved = [k for k, v in policy.decision.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.weight" in moved and "linears.0.weight" in moved
    assert set(result["policy"]["loss_scale"]) == {"focal", "kl", "hinge", "ce"}


def test_simplex_weights() -> None:
    w = simplex_weights([0.5, 0.25, 1.0, 1e-4])
    assert sum(w) == pytest.approx(1.0) and w[2] == 0.0 and min(w) >= 0
    assert simplex_weights([1.0, 1.0]) == [0.5, 0.5]


def test_search_runs_two_trials_and_trains_with_the_best(tiny_dataset: Path) -> None:
    cfg = run_cfg(tiny_dataset, loss__method="search", loss__search_trials=2, train__epochs=1)
    trainer = Trainer(cfg, log=QUIET)
    result = trainer.fit()
    desc = result["policy"]
    assert len(desc["trials"]) == 2 and desc["search_seconds"] > 0
    assert all(t["reports"] >= 1 for t in desc["trials"])  # intermediate values for the pruner
    best = desc["trials"][desc["best_trial"]]
    assert desc["best_valid_auc"] == max(
        t["valid_auc"] for t in desc["trials"] if t["valid_auc"] is not None
    )
    w = [desc["weights"][n] for n in ("focal", "kl", "hinge", "ce")]
    assert sum(w) == pytest.approx(1.0, abs=1e-6)
    assert w == pytest.approx(
        [best["weights"][n] for n in ("focal", "kl", "hinge", "ce")], abs=1e-6
    )
    # the final training is exactly a fixed-weights run with the chosen weights
    ref = Trainer(
        run_cfg(tiny_dataset, loss__method="weights", loss__weights=w, train__epochs=1), log=QUIET
    )
    assert ref.fit()["test"] == result["test"]


def test_search_rejects_bad_budget() -> None:
    with pytest.raises(ConfigError):
        SearchedWeights(candidates(), loss_cfg(search_trials=0))
