"""DCN (Wang et al., ADKDD 2017): cross network and MLP in parallel on the flat embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import CrossNetwork


class DCN(CTRModel):
    """``logits = W [Cross(x0), MLP(x0)] + b``, x0 = flatten(E).

    Model-specific: ``num_cross_layers`` (3).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        num_cross_layers: int = 3,
        **common: Any,
    ) -> None:
        super().__init__(spec, **common)
        in_dim = self.flat_dim
        self.embedding = self.field_embedding()
        self.cross = CrossNetwork(in_dim, num_cross_layers)
        self.mlp = self.tower(in_dim, head=False)
        self.head = nn.Linear(in_dim + self.mlp.output_dim, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        x0 = self.embedding(x, dense, bags).flatten(1)
        return self.logits(self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)))
