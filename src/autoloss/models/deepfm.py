"""DeepFM (Guo et al., IJCAI 2017): linear + FM + MLP over one shared embedding lookup."""

from __future__ import annotations

from typing import Any

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.fm import FMTerm


class DeepFM(CTRModel):
    """``logits = linear(x) + FM(E) + MLP(flatten(E))``, E = (B, F, embed_dim)."""

    def __init__(self, spec: FeatureSpec, **common: Any) -> None:
        super().__init__(spec, **common)
        self.embedding = self.field_embedding()
        self.linear = self.field_linear()
        self.fm = FMTerm(self.hp.embed_dim, self.out_dim)
        self.mlp = self.tower(self.flat_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        out = self.linear(x, dense, bags) + self.fm(emb) + self.mlp(emb.flatten(1))
        return self.logits(out)
