"""xDeepFM (Lian et al., KDD 2018): linear + CIN + MLP."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import CompressedInteraction


class XDeepFM(CTRModel):
    """``logits = linear(x) + W CIN(E) + MLP(flatten(E))``.

    Model-specific: ``cin_layers`` ((32, 32): feature maps per CIN layer, kept small because CIN
    costs O(H·F²·D) per row), ``split_half`` (True).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        cin_layers: tuple[int, ...] = (32, 32),
        split_half: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(spec, **common)
        self.embedding = self.field_embedding()
        self.linear = self.field_linear()
        self.cin = CompressedInteraction(spec.num_fields, tuple(cin_layers), split_half)
        self.cin_head = nn.Linear(self.cin.output_dim, self.out_dim)
        self.mlp = self.tower(self.flat_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        emb = self.embedding(x, dense, bags)
        out = self.linear(x, dense, bags) + self.cin_head(self.cin(emb)) + self.mlp(emb.flatten(1))
        return self.logits(out)
