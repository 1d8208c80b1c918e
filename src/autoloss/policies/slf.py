"""``slf``: Stochastic Loss Function (Liu & Lai, AAAI 2020), single level.

A decision network h(·; v) (the same architecture and input as the AutoLoss controller) selects
candidate losses per example with Gumbel-softmax; the recommender and the decision network are
trained *jointly on the same training batch*: one backward pass of the trainer's loss gives
gradients to both, and the decision network's Adam steps in :meth:`SLFPolicy.after_backward`.
No validation data is used.

What keeps it from degenerating. Minimising ``Σ_k p_k ℓ_k`` over p on the training batch is solved
by putting all weight on the numerically smallest candidate: the candidates live on different
scales (hinge is exactly 0 for a confident correct example, focal is ≤ CE, KL carries a constant
entropy offset), so a plain joint minimisation learns "pick the smallest number", not a useful
loss. The paper learns the selection from the gradients of the same generic loss in the same
backward pass but does not spell out how it avoids this. We keep its single-level, same-batch
structure and remove the scale artefact: the gradient that reaches the decision network is that of
``Σ_k p_k ℓ_k / m_k``, where ``m_k`` is a running mean (momentum ``SCALE_MOMENTUM``) of candidate
k's batch-mean loss. The recommender's loss and gradient are unchanged (forward value ``Σ p_k ℓ_k``),
only v's gradient sees the normalised losses (``w = p̄ + (p - p̄)/m`` with p̄ = p detached). The
decision network then prefers, per example, the candidate on which that example is relatively easy,
a choice that moves as the recommender learns; Gumbel noise with AutoLoss's τ schedule keeps it
exploring. This is our reading, documented in ``docs/method.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autoloss.errors import ConfigError
from autoloss.losses import DEFAULT_CANDIDATES, CandidateSet
from autoloss.policies.autoloss import task_classes, temperature_schedule
from autoloss.policies.base import LossPolicy, Regularization, as_candidate_set, config_candidates
from autoloss.policies.bilevel import PolicyOptimizer
from autoloss.policies.config import LossConfig, controller_options
from autoloss.policies.gumbel import (
    DEFAULT_INPUTS,
    ControllerInputs,
    GumbelSelector,
    LossController,
)

#: Momentum of the running per-candidate loss scale m_k.
SCALE_MOMENTUM = 0.01


class SLFLoss(LossPolicy):
    """Decision network + Gumbel-softmax, trained jointly on the training loss (single level).

    In a hand-written loop, call :meth:`update` right after ``loss.backward()``: it steps the
    decision network on the gradients the loss gave it (no validation data)::

        crit = SLFLoss(task="binary")
        loss = crit(logits, y); loss.backward(); opt.step(); crit.update()
    """

    name = "slf"
    update_every = 1
    uses_validation = False
    loss_scale: torch.Tensor
    scale_steps: torch.Tensor

    def __init__(
        self,
        task: str = "binary",
        num_classes: int | None = None,
        *,
        candidates: Sequence[str] | str | CandidateSet = DEFAULT_CANDIDATES,
        focal_gamma: float = 2.0,
        kl_eps: float = 0.1,
        controller_lr: float = 1e-3,
        tau_start: float = 1.0,
        tau_decay: float = 5e-5,
        tau_min: float = 0.01,
        hard: bool = False,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.2,
        inputs: Sequence[str] = DEFAULT_INPUTS,
        total_steps: int | None = None,
        tau_anneal: float | None = None,
        split_rows: tuple[int, int] | None = None,
    ) -> None:
        cs = as_candidate_set(candidates, task, focal_gamma=focal_gamma, kl_eps=kl_eps)
        super().__init__(cs)
        tau = temperature_schedule(tau_start, tau_decay, tau_min, tau_anneal, total_steps)
        if not controller_lr > 0:
            raise ConfigError(f"loss.controller_lr must be > 0, got {controller_lr}")
        self.num_classes = task_classes(task, num_classes)
        features = ControllerInputs(tuple(inputs), self.num_classes, cs, total_steps)
        network = LossController(len(cs), features.width, hidden, dropout)
        self.selector = GumbelSelector(
            network, tau, hard=hard, inputs=features, history_rows=split_rows
        )
        self.register_buffer("loss_scale", torch.ones(len(cs)))
        self.register_buffer("scale_steps", torch.zeros((), dtype=torch.long))
        self.policy_optimizer = PolicyOptimizer(
            lambda: [p for p in self.decision.parameters() if p.requires_grad], controller_lr
        )

    @classmethod
    def from_config(
        cls,
        cfg: LossConfig,
        task: str,
        num_classes: int,
        *,
        total_steps: int | None = None,
        split_rows: tuple[int, int] | None = None,
    ) -> SLFLoss:
        return cls(
            task,
            num_classes,
            candidates=config_candidates(cfg, task),
            total_steps=total_steps,
            split_rows=split_rows,
            **controller_options(cfg),
        )

    @property
    def decision(self) -> LossController:
        """The decision network h(·; v) (x -> α)."""
        return self.selector.network

    @torch.no_grad()
    def _update_scale(self, losses: torch.Tensor) -> None:
        batch_mean = losses.detach().mean(0).to(self.loss_scale.dtype)
        if int(self.scale_steps) == 0:
            self.loss_scale.copy_(batch_mean)
        else:
            self.loss_scale.lerp_(batch_mean, SCALE_MOMENTUM)
        self.scale_steps += 1

    def weights(
        self, logits: torch.Tensor, y: torch.Tensor, losses: torch.Tensor, step: int
    ) -> torch.Tensor:
        """Sample p (B, K); its value weights the recommender, its gradient trains v."""
        history = self.selector.history
        if history is not None and self.training:
            history.commit()
        log_alpha = self.selector.log_alpha(logits, y, step, learn=True, rows=self._step_rows)
        if self.training:
            self.selector.remember("train", self._step_rows, logits, y)
        p = self.selector.sample(log_alpha, step).to(losses.dtype)
        if self.training:
            self._update_scale(losses)
        scale = self.loss_scale.to(p.dtype).clamp_min(1e-8)
        return p.detach() + (p - p.detach()) / scale

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """α (B, K) of the decision network, before Gumbel noise."""
        return (
            self.selector.log_alpha(logits, y, self.num_steps, learn=False).exp().to(logits.dtype)
        )

    def update(
        self,
        model: nn.Module | None = None,
        x_valid: Any = None,
        y_valid: torch.Tensor | None = None,
        *,
        train_batch: tuple[Any, ...] | None = None,
        regularization: Regularization | None = None,
        valid_rows: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """One Adam step of the decision network on the gradients of the last backward pass."""
        if any(p.grad is not None for p in self.decision.parameters()):
            self.policy_optimizer.step()
        return {}

    def stats(self) -> dict[str, float]:
        out = super().stats()
        out["tau"] = self.selector.tau(max(self.num_steps - 1, 0))
        for n, v in zip(self.candidates, self.loss_scale.tolist()):
            out[f"scale_{n}"] = float(v)
        return out

    def controller_state(self) -> dict[str, Any] | None:
        return self.selector.saved_state(self.name, self.num_classes, self.candidate_set)

    def describe(self) -> dict[str, Any]:
        return {
            "tau_final": self.selector.tau(max(self.num_steps - 1, 0)),
            "hard": self.selector.hard,
            "loss_scale": dict(zip(self.candidates, self.loss_scale.tolist())),
        }

    def get_extra_state(self) -> dict[str, Any]:
        if self.selector.history is not None:
            self.selector.history.commit()  # a checkpoint holds every visit so far
        return {**super().get_extra_state(), "optimizer": self.policy_optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        if isinstance(state, dict):
            self.policy_optimizer.load_state_dict(state.get("optimizer"))
