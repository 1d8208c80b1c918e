"""Fixed policies: one loss, uniform weights, or user-given weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet
from autoloss.policies.base import LossPolicy, PolicyInput


class FixedWeights(LossPolicy):
    """The same weight vector for every example and step."""

    name = "weights"
    fixed: torch.Tensor

    def __init__(self, candidates: CandidateSet, weights: Sequence[float]) -> None:
        super().__init__(candidates)
        if len(weights) != len(candidates):
            raise ConfigError(
                f"--loss weights: {len(weights)} weights given for {len(candidates)} candidates "
                f"({','.join(candidates.names)})"
            )
        w = torch.as_tensor(list(weights), dtype=torch.float32)
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ConfigError("--loss weights: weights must be >= 0 with a positive sum")
        self.register_buffer("fixed", w)

    def weights(self, inp: PolicyInput) -> torch.Tensor:
        fixed = self.fixed.to(device=inp.losses.device, dtype=inp.losses.dtype)
        return fixed.expand(inp.losses.shape[0], -1)

    def describe(self) -> dict[str, Any]:
        return {"weights": dict(zip(self.candidates.names, self.fixed.tolist()))}


class SingleLoss(FixedWeights):
    """One candidate with weight 1 (the plain ``ce``, ``focal``, ... baselines)."""

    def __init__(self, candidates: CandidateSet, loss: str) -> None:
        w = [1.0 if n == loss else 0.0 for n in candidates.names]
        super().__init__(candidates, w)
        self.name = loss


class UniformWeights(FixedWeights):
    """Equal fixed weights 1/K (the paper's ablation AL-1)."""

    name = "uniform"

    def __init__(self, candidates: CandidateSet) -> None:
        k = len(candidates)
        super().__init__(candidates, [1.0 / k] * k)
