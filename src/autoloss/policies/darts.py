"""``darts``: one global learnable weight vector over the candidates (no per-example controller).

The weights are ``softmax(β)`` for K logits β (initialised to 0: uniform), the same for every
example. β learns on validation batches with AutoLoss's bi-level schedule: one Adam step every
``update_every`` recommender steps, ``first-order`` (weighted validation loss, W fixed) or
``unrolled`` (CE at the virtually stepped W'), see :mod:`autoloss.policies.bilevel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autoloss.losses import DEFAULT_CANDIDATES, CandidateSet
from autoloss.policies.base import as_candidate_set, config_candidates
from autoloss.policies.bilevel import BilevelPolicy, BilevelSchedule
from autoloss.policies.config import LossConfig


class DARTSLoss(BilevelPolicy):
    """Global weights ``softmax(β)`` (K,) over the candidate losses, learnt on validation batches.

    Example (a hand-written loop: see docs/api.md)::

        crit = DARTSLoss(task="binary")
        loss = crit(logits, y); loss.backward(); opt.step()
        if crit.should_update(step):
            crit.update(model, x_valid, y_valid, train_batch=(x, y))
    """

    name = "darts"

    def __init__(
        self,
        task: str = "binary",
        *,
        candidates: Sequence[str] | str | CandidateSet = DEFAULT_CANDIDATES,
        focal_gamma: float = 2.0,
        kl_eps: float = 0.1,
        mode: str = "first-order",
        update_every: int = 7,
        controller_lr: float = 1e-3,
        xi: float = 1e-3,
        unrolled_impl: str = "finite-difference",
    ) -> None:
        cs = as_candidate_set(candidates, task, focal_gamma=focal_gamma, kl_eps=kl_eps)
        super().__init__(cs, BilevelSchedule(mode, update_every, controller_lr, xi, unrolled_impl))
        self.beta = nn.Parameter(torch.zeros(len(cs)))

    @classmethod
    def from_config(cls, cfg: LossConfig, task: str, num_classes: int, **_: object) -> DARTSLoss:
        return cls(
            task,
            candidates=config_candidates(cfg, task),
            mode=cfg.mode,
            update_every=cfg.update_every,
            controller_lr=cfg.controller_lr,
            xi=cfg.xi,
            unrolled_impl=cfg.unrolled_impl,
        )

    def global_weights(self) -> torch.Tensor:
        """(K,) current weights on the simplex."""
        return torch.softmax(self.beta, dim=0)

    def policy_weights(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        step: int,
        *,
        own_step: bool = False,
        rows: torch.Tensor | None = None,
        split: str = "train",
    ) -> torch.Tensor:
        return self.global_weights().to(logits.dtype).expand(logits.shape[0], -1)

    def describe(self) -> dict[str, Any]:
        w = self.global_weights().detach().cpu().tolist()
        return {
            "weights": dict(zip(self.candidates, w)),
            **super().describe(),
            "updates": self.updates,
        }
