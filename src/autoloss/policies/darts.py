"""``darts``: one global learnable weight vector over the candidates (no per-example controller).

The weights are ``softmax(β)`` for K logits β (initialised to 0: uniform), the same for every
example. β learns on validation batches with AutoLoss's bi-level schedule: one Adam step every
``update_every`` recommender steps, ``first-order`` (weighted validation loss, W fixed) or
``unrolled`` (CE at the virtually stepped W'), see :mod:`autoloss.policies.bilevel`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet
from autoloss.policies import register_policy
from autoloss.policies.bilevel import BilevelPolicy
from autoloss.policies.controller import policy_candidates
from autoloss.train.config import LossConfig


class DartsWeights(BilevelPolicy):
    """Global weights ``softmax(β)`` (K,), learnt on validation batches."""

    name = "darts"

    def __init__(self, candidates: CandidateSet, cfg: LossConfig) -> None:
        super().__init__(candidates, cfg)
        self.beta = nn.Parameter(torch.zeros(len(candidates)))

    def global_weights(self) -> torch.Tensor:
        """(K,) current weights on the simplex."""
        return torch.softmax(self.beta, dim=0)

    def policy_weights(
        self, logits: torch.Tensor, y: torch.Tensor, step: int, *, own_step: bool = False
    ) -> torch.Tensor:
        return self.global_weights().to(logits.dtype).expand(logits.shape[0], -1)

    def describe(self) -> dict[str, Any]:
        w = self.global_weights().detach().cpu().tolist()
        out: dict[str, Any] = {
            "weights": dict(zip(self.candidates.names, w)),
            "mode": self.mode,
            "update_every": self.update_every,
            "updates": self.updates,
        }
        if self.mode == "unrolled":
            out.update(xi=self.xi, unrolled_impl=self.unrolled_impl)
        return out


def _make(cfg: LossConfig, task: str) -> DartsWeights:
    if cfg.controller:
        raise ConfigError("--controller applies to --loss autoloss / autoloss-soft, not darts")
    return DartsWeights(policy_candidates(cfg, task), cfg)


register_policy("darts", _make)
