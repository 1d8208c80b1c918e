"""Factorization Machine (Rendle, 2010)."""

from __future__ import annotations

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import FactorizationMachine, FieldEmbedding, FieldLinear


class FMTerm(nn.Module):
    """The FM second-order term as (B, out_dim) logits.

    Binary: ``sum_{i<j} <e_i, e_j>`` (B, 1). Multi-class: the bi-interaction vector (B, D)
    projected by a learnt (D, C) matrix, i.e. one diagonal-weighted FM per class from shared
    embeddings.
    """

    def __init__(self, embed_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fm = FactorizationMachine(reduce_sum=out_dim == 1)
        self.proj = nn.Linear(embed_dim, out_dim, bias=False) if out_dim > 1 else None

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        out = self.fm(emb)
        return self.proj(out) if self.proj is not None else out


class FM(CTRModel):
    """``logits = linear(x) + sum_{i<j} <e_i, e_j>``.

    ``mlp``, ``dropout`` and ``batch_norm`` are accepted and unused.
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
    ) -> None:
        super().__init__(spec)
        self.embedding = FieldEmbedding(spec, embed_dim, l2=embedding_l2)
        self.linear = FieldLinear(spec, self.out_dim, l2=embedding_l2)
        self.fm = FMTerm(embed_dim, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.linear(x, dense, bags) + self.fm(emb))
