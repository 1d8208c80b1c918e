"""Wide & Deep (Cheng et al., 2016): a linear (wide) part plus an MLP (deep) part."""

from __future__ import annotations

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import MLP, FieldEmbedding, FieldLinear


class WideDeep(CTRModel):
    """``logits = linear(x) + MLP(flatten(E))`` (the wide part has no hand-made crosses)."""

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
        self.embedding = FieldEmbedding(spec, embed_dim, l2=embedding_l2)
        self.linear = FieldLinear(spec, self.out_dim, l2=embedding_l2)
        self.mlp = MLP(spec.num_fields * embed_dim, mlp, dropout, batch_norm, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.linear(x, dense, bags) + self.mlp(emb.flatten(1)))
