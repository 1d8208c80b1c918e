"""Fixed policies: one loss, uniform weights, or user-given weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet, candidate_losses
from autoloss.policies.base import LossPolicy


class FixedWeights(LossPolicy):
    """The same weight vector for every example and step (``--loss weights:a,b,...``)."""

    name = "weights"
    fixed: torch.Tensor

    def __init__(self, candidate_set: CandidateSet, weights: Sequence[float]) -> None:
        super().__init__(candidate_set)
        if len(weights) != len(candidate_set):
            raise ConfigError(
                f"--loss weights: {len(weights)} weights given for {len(candidate_set)} candidates "
                f"({','.join(candidate_set.names)})"
            )
        w = torch.as_tensor(list(weights), dtype=torch.float32)
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ConfigError("--loss weights: weights must be >= 0 with a positive sum")
        self.register_buffer("fixed", w)

    def weights(
        self, logits: torch.Tensor, y: torch.Tensor, losses: torch.Tensor, step: int
    ) -> torch.Tensor:
        fixed = self.fixed.to(device=losses.device, dtype=losses.dtype)
        return fixed.expand(losses.shape[0], -1)

    def describe(self) -> dict[str, Any]:
        return {"weights": dict(zip(self.candidates, self.fixed.tolist()))}


class SingleLoss(FixedWeights):
    """One candidate with weight 1 (the plain ``ce``, ``focal``, ... baselines)."""

    def __init__(self, candidate_set: CandidateSet, loss: str) -> None:
        super().__init__(candidate_set, [1.0 if n == loss else 0.0 for n in candidate_set.names])
        self.name = loss


class UniformWeights(FixedWeights):
    """Equal fixed weights 1/K (the paper's ablation AL-1)."""

    name = "uniform"

    def __init__(self, candidate_set: CandidateSet) -> None:
        k = len(candidate_set)
        super().__init__(candidate_set, [1.0 / k] * k)


def candidate_loss(
    name: str, task: str = "binary", *, focal_gamma: float = 2.0, kl_eps: float = 0.1
) -> SingleLoss:
    """One fixed candidate loss as a criterion: ``candidate_loss("focal", "binary")(logits, y)``.

    Example:
        >>> crit = candidate_loss("ce", "binary")
        >>> round(float(crit(torch.zeros(2), torch.tensor([0, 1]))), 4)  # log 2
        0.6931
    """
    cs = candidate_losses([name], task, focal_gamma=focal_gamma, kl_eps=kl_eps)
    return SingleLoss(cs, name)
