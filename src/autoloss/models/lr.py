"""Logistic regression: the first-order term alone."""

from __future__ import annotations

from typing import Any

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel


class LR(CTRModel):
    """``logits = b + sum_j w[x_j]`` (+ dense and pooled bag weights).

    ``embed_dim``, ``mlp``, ``dropout`` and ``batch_norm`` are accepted (every model takes the
    common hyper-parameters) and unused; ``embedding_l2`` regularises the weight table.
    """

    def __init__(self, spec: FeatureSpec, **common: Any) -> None:
        super().__init__(spec, **common)
        self.linear = self.field_linear()

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.logits(self.linear(x, dense, bags))
