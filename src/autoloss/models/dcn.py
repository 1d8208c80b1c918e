"""DCN (Wang et al., ADKDD 2017): cross network and MLP in parallel on the flat embeddings."""

from __future__ import annotations

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import MLP, CrossNetwork, FieldEmbedding


class DCN(CTRModel):
    """``logits = W [Cross(x0), MLP(x0)] + b``, x0 = flatten(E).

    Model-specific: ``num_cross_layers`` (3).
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
        num_cross_layers: int = 3,
    ) -> None:
        super().__init__(spec)
        in_dim = spec.num_fields * embed_dim
        self.embedding = FieldEmbedding(spec, embed_dim, l2=embedding_l2)
        self.cross = CrossNetwork(in_dim, num_cross_layers)
        self.mlp = MLP(in_dim, mlp, dropout, batch_norm)
        self.head = nn.Linear(in_dim + self.mlp.output_dim, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        x0 = self.embedding(x, dense, bags).flatten(1)
        return self.logits(self.head(torch.cat([self.cross(x0), self.mlp(x0)], dim=1)))
