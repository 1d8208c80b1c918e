"""IPNN (Qu et al., ICDM 2016): MLP over embeddings and their pairwise inner products."""

from __future__ import annotations

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import MLP, FieldEmbedding, InnerProduct


class IPNN(CTRModel):
    """``logits = MLP([flatten(E), <e_i, e_j> for i < j])``."""

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
        f = spec.num_fields
        self.embedding = FieldEmbedding(spec, embed_dim, l2=embedding_l2)
        self.product = InnerProduct(f)
        in_dim = f * embed_dim + self.product.output_dim
        self.mlp = MLP(in_dim, mlp, dropout, batch_norm, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.mlp(torch.cat([emb.flatten(1), self.product(emb)], dim=1)))
