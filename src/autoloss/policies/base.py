"""The loss policy: the one abstraction every loss method implements.

The trainer computes the (B, K) matrix of candidate losses for a training batch and asks the
policy for (B, K) weights; the recommender's training loss is ``(weights * losses).sum(1).mean()``.
A policy that learns on validation data sets ``update_every = f`` and implements :meth:`update`,
which the trainer calls after every f-th recommender step with a fresh validation batch.
A policy learnt jointly on the training loss (SLF) returns weights that carry gradient and steps
its own optimiser in :meth:`after_backward`. The trainer does not know which policy it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoloss.data.spec import Batch
from autoloss.losses import CandidateSet


@dataclass
class PolicyInput:
    """What a policy sees at a recommender step.

    Attributes:
        logits: (B,) or (B, C) recommender logits (attached to the recommender's graph).
        y: (B,) int64 labels.
        losses: (B, K) candidate losses (attached to the recommender's graph).
        step: number of recommender steps taken before this one (0-based).
    """

    logits: torch.Tensor
    y: torch.Tensor
    losses: torch.Tensor
    step: int


@dataclass
class UpdateContext:
    """What a policy gets for its validation update.

    ``train_loss(model, batch, weights_fn)`` recomputes the recommender's training loss on a batch
    (with the model's regularisation), which unrolled (DARTS-style) hypergradients need;
    ``weights_fn(PolicyInput) -> (B, K)`` is usually the policy's own differentiable weights.
    """

    model: nn.Module
    candidates: CandidateSet
    train_batch: Batch
    valid_batch: Batch
    step: int
    model_lr: float
    train_loss: Callable[[nn.Module, Batch, Callable[[PolicyInput], torch.Tensor]], torch.Tensor]


class LossPolicy(nn.Module):
    """Base class: per-example weights over K candidate losses.

    Subclasses override :meth:`weights`; learnable ones also :meth:`update` (validation, bi-level)
    or :meth:`after_backward` (training batch, single level). ``name`` is the ``--loss`` method.
    """

    name: str = "policy"
    #: Call :meth:`update` with a validation batch after every ``update_every``-th step (0: never).
    update_every: int = 0

    def __init__(self, candidates: CandidateSet) -> None:
        super().__init__()
        self.candidates = candidates

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    def weights(self, inp: PolicyInput) -> torch.Tensor:
        raise NotImplementedError

    def after_backward(self, step: int) -> None:
        """Called after the recommender's backward pass (SLF steps its optimiser here)."""

    def update(self, ctx: UpdateContext) -> dict[str, float]:
        """Learn on a validation batch; returns scalars to log (e.g. the validation objective)."""
        return {}

    def stats(self, inp: PolicyInput, weights: torch.Tensor) -> dict[str, float]:
        """Scalars logged every ``log_every`` steps: mean weight per candidate, overall and per class."""
        out: dict[str, float] = {}
        w = weights.detach().float()
        y = inp.y
        names = self.candidates.names
        mean = w.mean(0)
        for k, n in enumerate(names):
            out[f"p_{n}"] = float(mean[k])
        classes = range(2) if inp.logits.dim() == 1 else range(int(inp.logits.shape[1]))
        for c in classes:
            mask = y == c
            if bool(mask.any()):
                mc = w[mask].mean(0)
                for k, n in enumerate(names):
                    out[f"p_{n}_y{c}"] = float(mc[k])
        return out

    def controller_state(self) -> dict[str, Any] | None:
        """What to save as ``controller.pt`` (weights_only-loadable), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """Small JSON-able summary for result.json (e.g. learnt global weights)."""
        return {}
