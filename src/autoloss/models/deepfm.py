"""DeepFM (Guo et al., IJCAI 2017): linear + FM + MLP over one shared embedding lookup."""

from __future__ import annotations

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.fm import FMTerm
from autoloss.models.layers import MLP, FieldEmbedding, FieldLinear


class DeepFM(CTRModel):
    """``logits = linear(x) + FM(E) + MLP(flatten(E))``, E = (B, F, embed_dim)."""

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
        self.fm = FMTerm(embed_dim, self.out_dim)
        self.mlp = MLP(spec.num_fields * embed_dim, mlp, dropout, batch_norm, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        out = self.linear(x, dense, bags) + self.fm(emb) + self.mlp(emb.flatten(1))
        return self.logits(out)
