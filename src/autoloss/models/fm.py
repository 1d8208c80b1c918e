"""Factorization Machine (Rendle, 2010)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import FactorizationMachine


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

    def __init__(self, spec: FeatureSpec, **common: Any) -> None:
        super().__init__(spec, **common)
        self.embedding = self.field_embedding()
        self.linear = self.field_linear()
        self.fm = FMTerm(self.hp.embed_dim, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        return self.logits(self.linear(x, dense, bags) + self.fm(emb))
