"""Wide & Deep (Cheng et al., 2016): a linear (wide) part plus an MLP (deep) part."""

from __future__ import annotations

from typing import Any

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel


class WideDeep(CTRModel):
    """``logits = linear(x) + MLP(flatten(E))`` (the wide part has no hand-made crosses)."""

    def __init__(self, spec: FeatureSpec, **common: Any) -> None:
        super().__init__(spec, **common)
        self.embedding = self.field_embedding()
        self.linear = self.field_linear()
        self.mlp = self.tower(self.flat_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.linear(x, dense, bags) + self.mlp(emb.flatten(1)))
