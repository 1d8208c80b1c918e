"""The sparse path: unique-row lookup gradients and the row-wise Adam equal their references."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autoloss.data.spec import FeatureSpec
from autoloss.models import build_model
from autoloss.models.layers import _UniqueRowsLookup
from autoloss.train.optim import RecommenderOptimizer, RowwiseAdam, split_parameters


def test_unique_lookup_gradient_equals_embedding_gradient() -> None:
    torch.manual_seed(0)
    w = torch.randn(50, 4, requires_grad=True)
    ids = torch.randint(0, 20, (8, 6))  # many repeated rows
    up = torch.randn(8, 6, 4)
    (F.embedding(ids, w, sparse=True) * up).sum().backward()
    ref = w.grad.coalesce().to_dense()
    w.grad = None
    out = _UniqueRowsLookup.apply(w, ids)
    assert torch.equal(out, F.embedding(ids, w))
    (out * up).sum().backward()
    idx = w.grad._indices()[0]
    assert w.grad.is_sparse and bool((idx[1:] > idx[:-1]).all())  # unique rows, sorted
    torch.testing.assert_close(w.grad.to_dense(), ref)


def test_rowwise_adam_matches_sparse_adam() -> None:
    torch.manual_seed(0)
    a = nn.Embedding(30, 3, sparse=True)
    b = nn.Embedding(30, 3, sparse=True)
    b.load_state_dict(a.state_dict())
    opt_a = RowwiseAdam(a.parameters(), lr=0.01)
    opt_b = torch.optim.SparseAdam(list(b.parameters()), lr=0.01)
    for step in range(5):
        ids = torch.randint(0, 12, (16, 3))
        target = torch.randn(16, 3, 3)
        for emb, opt, lookup in ((a, opt_a, True), (b, opt_b, False)):
            opt.zero_grad()
            out = _UniqueRowsLookup.apply(emb.weight, ids) if lookup else emb(ids)
            ((out - target) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6, msg=f"step {step}")
    # rows never looked up are untouched
    assert torch.equal(a.weight[12:], b.weight[12:])


def test_optimizer_splits_sparse_tables_from_dense_parameters() -> None:
    spec = FeatureSpec(cat_names=("a", "b"), cat_vocab=(5, 7))
    model = build_model("deepfm", spec, embed_dim=4, mlp=(8,))
    sparse, _dense = split_parameters(model)
    assert len(sparse) == 2  # embedding + linear tables
    assert all(p.dim() == 2 and p.shape[0] == 5 + 7 + 1 for p in sparse)
    opt = RecommenderOptimizer(model, lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.tensor([[1, 2], [3, 4], [0, 6]])
    loss = F.binary_cross_entropy_with_logits(model(x), torch.tensor([1.0, 0.0, 1.0]))
    opt.zero_grad()
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("embedding" in k for k in changed) and any("mlp" in k for k in changed)
