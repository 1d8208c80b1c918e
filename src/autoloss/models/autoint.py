"""AutoInt (Song et al., CIKM 2019): stacked multi-head self-attention over field embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import SelfAttentionInteraction


class AutoInt(CTRModel):
    """``logits = W flatten(Attn_L(...Attn_1(E))) + b`` [``+ MLP(flatten(E))`` with ``use_mlp``].

    The paper's AutoInt has no MLP, so by default ``mlp``, ``dropout`` and ``batch_norm`` are
    unused; ``use_mlp=True`` gives AutoInt+ (attention logits plus an MLP over the embeddings).
    Model-specific: ``attention_layers`` (3), ``num_heads`` (2), ``attention_dim`` (32),
    ``residual`` (True), ``scale`` (False: unscaled dot products, as in the paper), ``use_mlp``
    (False).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 32,
        residual: bool = True,
        scale: bool = False,
        use_mlp: bool = False,
        **common: Any,
    ) -> None:
        super().__init__(spec, **common)
        f = spec.num_fields
        self.embedding = self.field_embedding()
        dims = [self.hp.embed_dim] + [attention_dim] * attention_layers
        self.attention = nn.Sequential(
            *(
                SelfAttentionInteraction(dims[i], attention_dim, num_heads, residual, scale)
                for i in range(attention_layers)
            )
        )
        self.head = nn.Linear(f * dims[-1], self.out_dim)
        self.mlp = self.tower(self.flat_dim) if use_mlp else None

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        out = self.head(self.attention(emb).flatten(1))
        if self.mlp is not None:
            out = out + self.mlp(emb.flatten(1))
        return self.logits(out)
