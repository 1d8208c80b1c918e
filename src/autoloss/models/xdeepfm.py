"""xDeepFM (Lian et al., KDD 2018): linear + CIN + MLP."""

from __future__ import annotations

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import MLP, CompressedInteraction, FieldEmbedding, FieldLinear


class XDeepFM(CTRModel):
    """``logits = linear(x) + W CIN(E) + MLP(flatten(E))``.

    Model-specific: ``cin_layers`` ((32, 32): feature maps per CIN layer, kept small because CIN
    costs O(H·F²·D) per row), ``split_half`` (True).
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
        cin_layers: tuple[int, ...] = (32, 32),
        split_half: bool = True,
    ) -> None:
        super().__init__(spec)
        f = spec.num_fields
        self.embedding = FieldEmbedding(spec, embed_dim, l2=embedding_l2)
        self.linear = FieldLinear(spec, self.out_dim, l2=embedding_l2)
        self.cin = CompressedInteraction(f, tuple(cin_layers), split_half)
        self.cin_head = nn.Linear(self.cin.output_dim, self.out_dim)
        self.mlp = MLP(f * embed_dim, mlp, dropout, batch_norm, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        out = self.linear(x, dense, bags) + self.cin_head(self.cin(emb)) + self.mlp(emb.flatten(1))
        return self.logits(out)
