"""What every model shares: the feature spec, the logits shape, and embedding regularisation."""

from __future__ import annotations

import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models.layers import FieldEmbedding, FieldLinear


class CTRModel(nn.Module):
    """Base of all models: ``forward(x, dense=None, bags=None) -> logits``.

    Logits are (B,) when ``spec.num_classes == 2`` and (B, C) otherwise; no sigmoid/softmax.
    Subclasses compute a (B, out_dim) tensor and return ``self.logits(t)``.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.spec = spec
        self.out_dim = spec.out_dim

    def logits(self, t: torch.Tensor) -> torch.Tensor:
        """(B, out_dim) -> (B,) for binary tasks, unchanged for multi-class."""
        return t.squeeze(-1) if self.out_dim == 1 else t

    def regularization(self) -> torch.Tensor:
        """Sum of the embedding L2 penalties stored by the last training forward (0 if none)."""
        total: torch.Tensor | None = None
        for m in self.modules():
            if isinstance(m, FieldEmbedding | FieldLinear) and m.penalty is not None:
                total = m.penalty if total is None else total + m.penalty
        if total is None:
            p = next(self.parameters(), None)
            return torch.zeros((), device=p.device if p is not None else None)
        return total
