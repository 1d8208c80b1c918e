"""``ops.lookup`` (gradient summed per distinct row) and the shared sort against PyTorch's
``F.embedding(sparse=True)``."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from autoloss import ops
from autoloss.data.spec import FeatureSpec
from autoloss.models import build_model

KERNELS_TESTED = ("embedding", "shared_sort")


def _dense_grad(w: torch.Tensor) -> torch.Tensor:
    assert w.grad is not None
    return w.grad.coalesce().to_dense() if w.grad.is_sparse else w.grad


@pytest.mark.parametrize("width", [1, 3, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lookup_agrees_with_sparse_embedding(width: int, dtype: torch.dtype, device: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(60, width, dtype=dtype, device=device, requires_grad=True)
    x = torch.randint(0, 20, (32, 3), device=device)  # many repeated rows
    offsets = (0, 20, 40)
    ids = x + torch.tensor(offsets, device=device)
    up = torch.randn(32, 3, width, dtype=dtype, device=device)
    grads, outs = [], []
    for ref in (False, True):
        ops.SHARED_SORT.clear()
        w.grad = None
        with ops.use_reference("embedding", on=ref):
            out = ops.lookup(w, ids, x, offsets)
        (out * up).sum().backward()
        outs.append(out.detach())
        grads.append(_dense_grad(w))
        if not ref:  # ours: one entry per distinct row, sorted, flagged coalesced
            idx = w.grad._indices()[0]
            assert w.grad.is_sparse and bool((idx[1:] > idx[:-1]).all())
    # the forward gathers the same rows: bit for bit
    assert torch.equal(outs[0], outs[1])
    # The gradient sums the same occurrence rows per distinct id, in another order (CSR product
    # or index_add_ against coalesce): equal within rounding, a row summing at most 32 terms,
    # assert_close's dtype defaults (float32: rtol 1.3e-6, atol 1e-5) cover it.
    torch.testing.assert_close(grads[0], grads[1])


def test_lookup_without_a_gradient_is_torch_embedding() -> None:
    w = torch.randn(10, 4, requires_grad=True)
    x = torch.randint(0, 10, (5, 2))
    with torch.no_grad():
        assert torch.equal(ops.lookup(w, x, x, (0, 0)), F.embedding(x, w))


@pytest.mark.parametrize("width", [1, 3, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rows_summed_per_id_equal_index_add(width: int, dtype: torch.dtype) -> None:
    """The CSR product (tables wider than one column on the CPU) and index_add_ agree, and the
    grouping inverts: uniq[inverse] gives the ids back, order sorts them, starts count them."""
    torch.manual_seed(0)
    ids = torch.randint(0, 40, (25, 6))
    rows = ops.group_rows(ids)
    for a, b in zip(rows, ops.group_rows(ids, num_rows=40), strict=True):  # 32-bit sort keys
        assert a.dtype == b.dtype and torch.equal(a, b)
    flat = ids.reshape(-1)
    assert torch.equal(rows.uniq[rows.inverse], flat)
    assert torch.equal(flat[rows.order], flat.sort().values)
    assert torch.equal(rows.starts.diff(), torch.bincount(rows.inverse))
    g = torch.randn(flat.numel(), width, dtype=dtype)
    ref = torch.zeros(rows.uniq.numel(), width, dtype=dtype).index_add_(0, rows.inverse, g)
    torch.testing.assert_close(ops.sum_rows(rows, g), ref)  # summation order only


def _step_grads(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks
    model(x).sum().backward()
    return [p.grad.to_dense().clone() for p in model.parameters() if p.grad is not None]


def test_a_model_under_the_reference_lookup_gets_the_same_step(device: str) -> None:
    """DeepFM's embedding and linear tables: the switch ``embedding`` gives the same logits bit
    for bit and the same gradients within rounding; ``shared_sort`` (each table sorting its own
    ids) the same gradients bit for bit (the same sums, computed twice)."""
    spec = FeatureSpec(cat_names=("a", "b", "c"), cat_vocab=(5, 7, 3))
    torch.manual_seed(0)
    model = build_model("deepfm", spec, embed_dim=4, mlp=(8,), dropout=0.0).to(device)
    x = torch.tensor([[1, 2, 0], [3, 4, 2], [1, 6, 0], [1, 2, 1]], device=device)
    ops.SHARED_SORT.clear()
    ours = _step_grads(model, x)
    with ops.use_reference("shared_sort"):
        unshared = _step_grads(model, x)
    for a, b in zip(ours, unshared, strict=True):
        assert torch.equal(a, b)
    with ops.use_reference("embedding"):
        theirs = _step_grads(model, x)
        logits = model(x)
    assert torch.equal(logits, model(x))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)  # float32, sums of at most 4 terms reordered


def test_the_shared_sort_keeps_one_batch_until_the_next_or_clear() -> None:
    x = torch.tensor([[1, 2], [3, 1]])
    ids = x + torch.tensor([0, 4])
    cache = ops.SharedSort()
    first = cache.rows(x, ids, (0, 4))
    assert cache.rows(x, ids, (0, 4)) is first  # same tensor, same version, same offsets
    assert cache.rows(x.clone(), ids, (0, 4)) is not first  # another batch replaces it
    cache.clear()
    assert cache.rows(x, ids, (0, 4)) is not first
    with ops.use_reference("shared_sort"):
        again = cache.rows(x, ids, (0, 4))
        assert cache.rows(x, ids, (0, 4)) is not again
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
