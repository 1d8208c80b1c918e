"""Logistic regression: the first-order term alone."""

from __future__ import annotations

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import FieldLinear


class LR(CTRModel):
    """``logits = b + sum_j w[x_j]`` (+ dense and pooled bag weights).

    ``embed_dim``, ``mlp``, ``dropout`` and ``batch_norm`` are accepted (every model takes the
    common hyper-parameters) and unused; ``embedding_l2`` regularises the weight table.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        embed_dim: int = 16,
        mlp: tuple[int, ...] = (128, 128),
        dropout: float = 0.2,
        batch_norm: bool = True,
        embedding_l2: float = 0.0,
    ) -> None:
        super().__init__(spec)
        self.linear = FieldLinear(spec, self.out_dim, l2=embedding_l2)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.logits(self.linear(x, dense, bags))
