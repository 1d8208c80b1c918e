"""AutoLoss around a pytorch-fm-style model: one offset embedding table, FM + linear terms.

pytorch-fm's models end in a sigmoid and train with BCELoss; here the model returns the logit
(drop the sigmoid) and AutoLoss replaces BCELoss. Multi-class works the same way with
``AutoLoss(task="multiclass", num_classes=C)`` and (B, C) logits.
"""

import numpy as np
import torch
from torch import nn

import autoloss


class FeaturesEmbedding(nn.Module):
    def __init__(self, field_dims: list[int], dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(sum(field_dims), dim)
        self.offsets = torch.tensor(np.concatenate([[0], np.cumsum(field_dims)[:-1]]))
        nn.init.xavier_uniform_(self.embedding.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x + self.offsets)


class FactorizationMachineModel(nn.Module):
    """pytorch-fm's FM, returning the logit (B,) instead of sigmoid(logit)."""

    def __init__(self, field_dims: list[int], dim: int = 16) -> None:
        super().__init__()
        self.embedding = FeaturesEmbedding(field_dims, dim)
        self.linear = FeaturesEmbedding(field_dims, 1)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return self.linear(x).sum((1, 2)) + self.bias + fm


# A synthetic click log: 3 fields, clicks depend on a low-rank user-item interaction; 20% of the
# training labels are flipped (validation labels are clean).
g = torch.Generator().manual_seed(0)
field_dims = [50, 80, 5]
x = torch.stack([torch.randint(0, d, (24_000,), generator=g) for d in field_dims], 1)
affinity = torch.randn(50, 2, generator=g) @ torch.randn(2, 80, generator=g)  # low rank
y = (torch.rand(24_000, generator=g) < torch.sigmoid(2 * affinity[x[:, 0], x[:, 1]])).long()
x_train, y_train, x_valid, y_valid = x[:20_000], y[:20_000].clone(), x[20_000:], y[20_000:]
flip = torch.rand(20_000, generator=g) < 0.2
y_train[flip] = 1 - y_train[flip]

torch.manual_seed(0)
model = FactorizationMachineModel(field_dims)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
crit = autoloss.AutoLoss(task="binary", mode="unrolled", update_every=5)
for _epoch in range(2):
    order = torch.randperm(20_000)
    for step, idx in enumerate(order.split(500)):
        xb, yb = x_train[idx], y_train[idx]
        loss = crit(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if crit.should_update(step):
            v = torch.randint(0, 4000, (500,))
            info = crit.update(model, x_valid[v], y_valid[v], train_batch=(xb, yb))

with torch.no_grad():
    valid_loss = nn.functional.binary_cross_entropy_with_logits(model(x_valid), y_valid.float())
print(f"validation logloss {float(valid_loss):.4f}, last controller objective {info}")
