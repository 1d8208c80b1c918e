"""AutoLoss in a hand-written PyTorch loop, around a model written here (not one of autoloss's)."""

import torch
from torch import nn

import autoloss

torch.manual_seed(0)
data = autoloss.open_dataset(task="binary")  # the embedded MovieLens sample (or a prepared dir)
spec = data.spec


class TwoTower(nn.Module):
    """User and item embeddings, a dot product and a bias: returns logits (B,)."""

    def __init__(self, users: int, items: int, dim: int = 16) -> None:
        super().__init__()
        self.user = nn.Embedding(users, dim)
        self.item = nn.Embedding(items, dim)
        self.bias = nn.Parameter(torch.zeros(()))
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.user(x[:, 0]) * self.item(x[:, 1])).sum(1) + self.bias


model = TwoTower(spec.cat_vocab[0], spec.cat_vocab[1])
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
crit = autoloss.AutoLoss(task="binary")  # candidates focal, kl, hinge, ce; first-order; f = 7
train = autoloss.BatchIterator(data.split("train"), 1000, seed=0)
valid = autoloss.BatchIterator(data.split("valid"), 1000, seed=1)
valid_batches = iter(valid.epoch(0))


def next_valid() -> autoloss.Batch:
    global valid_batches
    try:
        return next(valid_batches)
    except StopIteration:
        valid_batches = iter(valid.epoch(1))
        return next(valid_batches)


def valid_logloss() -> float:
    model.eval()
    with torch.no_grad():
        batches = list(valid.epoch(0))
        logits = torch.cat([model(b.x) for b in batches])
        y = torch.cat([b.y for b in batches]).float()
    model.train()
    return float(nn.functional.binary_cross_entropy_with_logits(logits, y))


before = valid_logloss()
for step, batch in enumerate(train.epoch(0)):
    loss = crit(model(batch.x), batch.y)  # mean_b Σ_k p_bk ℓ_bk
    opt.zero_grad()
    loss.backward()
    opt.step()
    if crit.should_update(step):
        vb = next_valid()
        crit.update(model, vb.x, vb.y, train_batch=(batch.x, batch.y))

after = valid_logloss()
probs = crit.probabilities(model(batch.x).detach(), batch.y)  # (B, K) α per example
print(f"validation logloss {before:.4f} -> {after:.4f}")
print("mean α:", dict(zip(crit.candidates, probs.mean(0).tolist())))
torch.save(crit.state_dict(), "/tmp/autoloss-example-crit.pt")
crit.load_state_dict(torch.load("/tmp/autoloss-example-crit.pt", weights_only=True))
