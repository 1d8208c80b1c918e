"""IPNN (Qu et al., ICDM 2016): MLP over embeddings and their pairwise inner products."""

from __future__ import annotations

from typing import Any

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import InnerProduct


class IPNN(CTRModel):
    """``logits = MLP([flatten(E), <e_i, e_j> for i < j])``."""

    def __init__(self, spec: FeatureSpec, **common: Any) -> None:
        super().__init__(spec, **common)
        self.embedding = self.field_embedding()
        self.product = InnerProduct(spec.num_fields)
        self.mlp = self.tower(self.flat_dim + self.product.output_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.mlp(torch.cat([emb.flatten(1), self.product(emb)], dim=1)))
