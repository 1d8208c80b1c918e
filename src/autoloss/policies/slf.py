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

from typing import Any

import torch

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet
from autoloss.policies import register_policy
from autoloss.policies.base import LossPolicy, PolicyInput
from autoloss.policies.bilevel import PolicyOptimizer
from autoloss.policies.controller import (
    LossController,
    check_temperature,
    controller_input,
    controller_state,
    gumbel_softmax,
    input_dim,
    policy_candidates,
    sample_gumbel,
    temperature,
)
from autoloss.train.config import LossConfig

#: Momentum of the running per-candidate loss scale m_k.
SCALE_MOMENTUM = 0.01


class SLFPolicy(LossPolicy):
    """Decision network + Gumbel-softmax, trained jointly on the training loss (single level)."""

    name = "slf"
    loss_scale: torch.Tensor
    scale_steps: torch.Tensor

    def __init__(
        self, candidates: CandidateSet, cfg: LossConfig, task: str, num_classes: int | None = None
    ) -> None:
        super().__init__(candidates)
        check_temperature(cfg)
        if not cfg.controller_lr > 0:
            raise ConfigError(f"loss.controller_lr must be > 0, got {cfg.controller_lr}")
        self.task = task
        self.num_classes: int | None = 2 if task == "binary" else num_classes
        self.hard = bool(cfg.hard)
        self.tau_start, self.tau_decay, self.tau_min = cfg.tau_start, cfg.tau_decay, cfg.tau_min
        dim = input_dim(self.num_classes) if self.num_classes is not None else None
        self.decision = LossController(
            len(candidates), dim, cfg.controller_hidden, cfg.controller_dropout
        )
        self.register_buffer("loss_scale", torch.ones(len(candidates)))
        self.register_buffer("scale_steps", torch.zeros((), dtype=torch.long))
        self.policy_optimizer = PolicyOptimizer(
            lambda: [p for p in self.decision.parameters() if p.requires_grad], cfg.controller_lr
        )
        self.last_step = 0

    def before_training(self, trainer: Any) -> None:
        num_classes = int(trainer.spec.num_classes)
        self.decision.materialize(input_dim(num_classes))
        self.num_classes = num_classes

    def tau(self, step: int) -> float:
        return temperature(step, self.tau_start, self.tau_decay, self.tau_min)

    def gumbel_noise(self, log_alpha: torch.Tensor) -> torch.Tensor:
        return sample_gumbel(log_alpha)

    @torch.no_grad()
    def _update_scale(self, losses: torch.Tensor) -> None:
        batch_mean = losses.detach().mean(0).to(self.loss_scale.dtype)
        if int(self.scale_steps) == 0:
            self.loss_scale.copy_(batch_mean)
        else:
            self.loss_scale.lerp_(batch_mean, SCALE_MOMENTUM)
        self.scale_steps += 1

    def weights(self, inp: PolicyInput) -> torch.Tensor:
        """Sample p (B, K); its value weights the recommender, its gradient trains v."""
        self.last_step = inp.step
        dtype = self.decision.head.weight.dtype
        log_alpha = self.decision.log_alpha(controller_input(inp.logits, inp.y).to(dtype))
        p = gumbel_softmax(
            log_alpha, self.tau(inp.step), hard=self.hard, noise=self.gumbel_noise(log_alpha)
        ).to(inp.losses.dtype)
        self._update_scale(inp.losses)
        scale = self.loss_scale.to(p.dtype).clamp_min(1e-8)
        return p.detach() + (p - p.detach()) / scale

    def after_backward(self, step: int) -> None:
        if any(p.grad is not None for p in self.decision.parameters()):
            self.policy_optimizer.step()

    def stats(self, inp: PolicyInput, weights: torch.Tensor) -> dict[str, float]:
        out = super().stats(inp, weights)
        out["tau"] = self.tau(inp.step)
        for n, v in zip(self.candidates.names, self.loss_scale.tolist()):
            out[f"scale_{n}"] = float(v)
        return out

    def controller_state(self) -> dict[str, Any] | None:
        return controller_state(
            self.decision,
            method=self.name,
            task=self.task,
            num_classes=self.num_classes or 0,
            candidates=self.candidates,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "tau_final": self.tau(self.last_step),
            "hard": self.hard,
            "loss_scale": dict(zip(self.candidates.names, self.loss_scale.tolist())),
        }

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.policy_optimizer.state_dict()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict):
            self.policy_optimizer.load_state_dict(state.get("optimizer"))


def _make(cfg: LossConfig, task: str) -> SLFPolicy:
    if cfg.controller:
        raise ConfigError("--controller applies to --loss autoloss / autoloss-soft, not slf")
    return SLFPolicy(policy_candidates(cfg, task), cfg, task)


register_policy("slf", _make)
