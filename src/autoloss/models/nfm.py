"""NFM (He & Chua, SIGIR 2017): linear term + MLP over bi-interaction pooling."""

from __future__ import annotations

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import MLP, BiInteractionPooling, FieldEmbedding, FieldLinear


class NFM(CTRModel):
    """``logits = linear(x) + MLP(sum_{i<j} e_i ⊙ e_j)``."""

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
        self.bi = BiInteractionPooling()
        self.mlp = MLP(embed_dim, mlp, dropout, batch_norm, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.linear(x, dense, bags) + self.mlp(self.bi(emb)))
