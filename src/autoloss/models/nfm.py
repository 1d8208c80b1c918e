"""NFM (He & Chua, SIGIR 2017): linear term + MLP over bi-interaction pooling."""

from __future__ import annotations

from typing import Any

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import BiInteractionPooling


class NFM(CTRModel):
    """``logits = linear(x) + MLP(sum_{i<j} e_i ⊙ e_j)``."""

    def __init__(self, spec: FeatureSpec, **common: Any) -> None:
        super().__init__(spec, **common)
        self.embedding = self.field_embedding()
        self.linear = self.field_linear()
        self.bi = BiInteractionPooling()
        self.mlp = self.tower(self.hp.embed_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.linear(x, dense, bags) + self.mlp(self.bi(emb)))
