"""The sparse path: unique-row lookup gradients and the row-wise Adam equal their references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from autoloss import ops
from autoloss.data.spec import FeatureSpec
from autoloss.models import build_model
from autoloss.ops.embedding import _UniqueRowsLookup
from autoloss.train.optim import (
    RecommenderOptimizer,
    RowwiseAdam,
    fused_adam,
    split_parameters,
)


def unique_lookup(w: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The unique-row lookup with the batch's unique ids computed here."""
    return _UniqueRowsLookup.apply(w, ids, ops.group_rows(ids))


def test_unique_lookup_gradient_equals_embedding_gradient() -> None:
    torch.manual_seed(0)
    w = torch.randn(50, 4, requires_grad=True)
    ids = torch.randint(0, 20, (8, 6))  # many repeated rows
    up = torch.randn(8, 6, 4)
    (F.embedding(ids, w, sparse=True) * up).sum().backward()
    ref = w.grad.coalesce().to_dense()
    w.grad = None
    out = unique_lookup(w, ids)
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
            out = unique_lookup(emb.weight, ids) if lookup else emb(ids)
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


def test_dense_adam_on_a_table_equals_torch_adam() -> None:
    """lazy=False: rows keep moving on their momentum at steps that do not look them up, as with
    torch.optim.Adam; the lazy (row-wise) optimiser leaves them alone."""
    torch.manual_seed(0)
    tables = [
        nn.Embedding(30, 3, sparse=True),
        nn.Embedding(30, 3, sparse=True),
        nn.Embedding(30, 3),
    ]
    for t in tables[1:]:
        t.load_state_dict(tables[0].state_dict())
    dense, lazy, ref = tables
    opts = [
        RowwiseAdam(dense.parameters(), lr=0.01, lazy=False),
        RowwiseAdam(lazy.parameters(), lr=0.01),
        torch.optim.Adam(ref.parameters(), lr=0.01),
    ]
    for step, ids in enumerate([torch.arange(0, 6), torch.arange(6, 12), torch.arange(6, 12)]):
        ids = ids.view(2, 3)
        target = torch.randn(2, 3, 3)
        for emb, opt in zip(tables, opts, strict=True):
            opt.zero_grad()
            out = unique_lookup(emb.weight, ids) if emb.sparse else emb(ids)
            ((out - target) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(dense.weight, ref.weight, rtol=1e-5, atol=1e-6, msg=f"{step}")
    # rows 0-5 were looked up at step 0 only: dense Adam moved them on, the lazy one did not
    assert not torch.allclose(dense.weight[:6], lazy.weight[:6])
    assert torch.equal(dense.weight[12:], lazy.weight[12:])  # never looked up: untouched by both


def _deepfm_step(clip_norm: float, lr: float = 1e-2) -> tuple[nn.Module, RecommenderOptimizer]:
    torch.manual_seed(0)
    spec = FeatureSpec(cat_names=("a", "b"), cat_vocab=(5, 7))
    model = build_model("deepfm", spec, embed_dim=4, mlp=(8,))
    opt = RecommenderOptimizer(model, lr=lr, clip_norm=clip_norm)
    x = torch.tensor([[1, 2], [3, 4], [0, 6]])
    loss = F.binary_cross_entropy_with_logits(model(x), torch.tensor([1.0, 0.0, 1.0])) * 1e4
    opt.zero_grad()
    loss.backward()
    return model, opt


def test_clip_norm_bounds_the_global_norm_of_sparse_and_dense_gradients() -> None:
    from autoloss.train.optim import clip_gradients

    model, opt = _deepfm_step(clip_norm=1.0)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert any(g.is_sparse for g in grads)

    def norm() -> float:
        parts = [g.coalesce()._values() if g.is_sparse else g for g in grads]
        return float(torch.sqrt(sum((v.double() ** 2).sum() for v in parts)))

    before = norm()
    assert before > 10  # the scaled loss makes the step's gradient large
    assert clip_gradients(opt.optimizers, 1.0) == pytest.approx(before, rel=1e-5)
    assert norm() == pytest.approx(1.0, rel=1e-4)
    assert clip_gradients(opt.optimizers, 5.0) == pytest.approx(1.0, rel=1e-4)  # under: unchanged
    assert norm() == pytest.approx(1.0, rel=1e-4)


def test_decay_lr_multiplies_every_rate_and_stops_at_the_floor() -> None:
    _, opt = _deepfm_step(clip_norm=0.0, lr=1e-3)
    assert opt.decay_lr(0.1) == pytest.approx(1e-4)
    assert all(g["lr"] == pytest.approx(1e-4) for o in opt.optimizers for g in o.param_groups)
    assert opt.decay_lr(0.1, min_lr=5e-5) == pytest.approx(5e-5)
    state = opt.state_dict()  # the rates travel with a checkpoint
    _, fresh = _deepfm_step(clip_norm=0.0, lr=1e-3)
    fresh.load_state_dict(state)
    assert all(g["lr"] == pytest.approx(5e-5) for o in fresh.optimizers for g in o.param_groups)


def test_clip_norm_counts_a_row_looked_up_twice_once() -> None:
    """Bag lookups give uncoalesced sparse gradients (one entry per occurrence): the norm is the
    norm of the summed row, as in one process's dense gradient."""
    from autoloss.train.optim import clip_gradients

    table = nn.Parameter(torch.zeros(4, 2))
    idx = torch.tensor([[1, 1, 2]])
    rows = torch.tensor([[3.0, 0.0], [3.0, 0.0], [0.0, 8.0]])
    table.grad = torch.sparse_coo_tensor(idx, rows, (4, 2), check_invariants=True)
    opt = RowwiseAdam([table])
    assert clip_gradients([opt], 100.0) == pytest.approx(10.0)  # |(6, 0)|, |(0, 8)| -> 10


def test_tables_of_one_model_share_the_batch_unique_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepFM's embedding and linear tables look up the same batch: one sort, not two; a new batch
    or an in-place change of the same tensor computes again; gradients match a model without
    the shared path."""
    calls = []
    real = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = FeatureSpec(cat_names=("a", "b", "c"), cat_vocab=(5, 7, 3))
    torch.manual_seed(0)
    model = build_model("deepfm", spec, embed_dim=4, mlp=(8,))
    x = torch.tensor([[1, 2, 0], [3, 4, 2], [1, 6, 0], [1, 2, 1]])
    model(x).sum().backward()
    assert len(calls) == 1
    model(x.clone()).sum()
    assert len(calls) == 2
    x[0, 0] = 4  # same tensor, new contents
    model(x).sum()
    assert len(calls) == 3
    rows = ops.SHARED_SORT.rows(x, x + model.embedding.offsets, (0, 5, 12))
    assert torch.equal(rows.uniq[rows.inverse].view(4, 3), x + model.embedding.offsets)
    # gradients equal those of the same model computing every table's unique ids on its own
    grads = []
    for shared in (True, False):
        ops.SHARED_SORT.clear()
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        with ops.use_reference("shared_sort", on=not shared):
            model(x).sum().backward()
        grads.append([p.grad.to_dense().clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_rowwise_adam_continues_from_a_state_saved_with_separate_moments() -> None:
    """Checkpoints written before the moments were interleaved (``exp_avg``, ``exp_avg_sq``) load
    and continue exactly as the optimiser that saved them."""
    torch.manual_seed(0)
    a = nn.Embedding(20, 3, sparse=True)
    b = nn.Embedding(20, 3, sparse=True)
    opt_a = RowwiseAdam(a.parameters(), lr=0.01)
    batches = [(torch.randint(0, 12, (8, 2)), torch.randn(8, 2, 3)) for _ in range(4)]

    def step(emb: nn.Embedding, opt: RowwiseAdam, ids: torch.Tensor, up: torch.Tensor) -> None:
        opt.zero_grad()
        (unique_lookup(emb.weight, ids) * up).sum().backward()
        opt.step()

    for ids, up in batches[:3]:
        step(a, opt_a, ids, up)
    saved = copy.deepcopy(opt_a.state_dict())  # state_dict() shares the live tensors
    moments = saved["state"][0].pop("moments")
    assert moments.shape == (20, 2, 3)
    saved["state"][0]["exp_avg"], saved["state"][0]["exp_avg_sq"] = moments[:, 0], moments[:, 1]
    b.load_state_dict(a.state_dict())
    opt_b = RowwiseAdam(b.parameters(), lr=0.01)
    opt_b.load_state_dict(saved)
    for emb, opt in ((a, opt_a), (b, opt_b)):
        step(emb, opt, *batches[3])
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(opt_a.state[a.weight]["moments"], opt_b.state[b.weight]["moments"])
    assert "exp_avg" not in opt_b.state[b.weight]


def test_dense_adam_is_fused_on_the_cpu_and_the_default_elsewhere() -> None:
    cpu = fused_adam([nn.Parameter(torch.zeros(3))], lr=1e-3)
    assert cpu.defaults["fused"] is True
    meta = fused_adam([nn.Parameter(torch.zeros(3, device="meta"))], lr=1e-3)
    assert not meta.defaults["fused"]
