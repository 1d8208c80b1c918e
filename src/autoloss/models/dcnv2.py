"""DCN-V2 (Wang et al., WWW 2021): full-rank cross network with an MLP, parallel or stacked."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.base import CTRModel
from autoloss.models.layers import CrossNetworkV2

STRUCTURES = ("parallel", "stacked", "crossnet_only")


class DCNv2(CTRModel):
    """x0 = flatten(E); ``parallel``: W [CrossV2(x0), MLP(x0)]; ``stacked``: W MLP(CrossV2(x0));
    ``crossnet_only``: W CrossV2(x0).

    Model-specific: ``num_cross_layers`` (3), ``structure`` ("parallel").
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        num_cross_layers: int = 3,
        structure: str = "parallel",
        **common: Any,
    ) -> None:
        super().__init__(spec, **common)
        if structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {', '.join(STRUCTURES)}, got {structure!r}")
        in_dim = self.flat_dim
        self.structure = structure
        self.embedding = self.field_embedding()
        self.cross = CrossNetworkV2(in_dim, num_cross_layers)
        self.mlp = self.tower(in_dim, head=False) if structure != "crossnet_only" else None
        head_in = in_dim
        if self.mlp is not None:
            head_in = self.mlp.output_dim + (in_dim if structure == "parallel" else 0)
        self.head = nn.Linear(head_in, self.out_dim)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        x0 = self.embedding(x, dense, bags).flatten(1)
        h = self.cross(x0)
        if self.mlp is not None:
            h = torch.cat([h, self.mlp(x0)], dim=1) if self.structure == "parallel" else self.mlp(h)
        return self.logits(self.head(h))
