"""``ops.pairwise`` (the FM term's one-expression backward) against autograd's backward of the
same expression."""

from __future__ import annotations

import itertools

import pytest
import torch

from autoloss import ops

KERNELS_TESTED = ("pairwise",)


@pytest.mark.parametrize("reduce_sum", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pairwise_agrees_with_autograd(reduce_sum: bool, dtype: torch.dtype, device: str) -> None:
    torch.manual_seed(0)
    e = torch.randn(16, 6, 5, dtype=dtype, device=device, requires_grad=True)
    out = ops.pairwise(e, reduce_sum)
    assert out.grad_fn is not None and "PairwiseInteraction" in type(out.grad_fn).__name__
    with ops.use_reference("pairwise"):
        ref = ops.pairwise(e, reduce_sum)
    assert "PairwiseInteraction" not in type(ref.grad_fn).__name__
    assert torch.equal(out, ref)  # the same forward expression: bit for bit
    pairs = sum(e[:, i] * e[:, j] for i, j in itertools.combinations(range(6), 2))
    assert isinstance(pairs, torch.Tensor)
    explicit = pairs.sum(1, keepdim=True) if reduce_sum else pairs
    torch.testing.assert_close(out, explicit)  # the square-of-sum trick rounds differently
    up = torch.randn_like(out)
    (ga,) = torch.autograd.grad((out * up).sum(), e)
    (gb,) = torch.autograd.grad((ref * up).sum(), e)
    # (s - e_i)·g against autograd's five passes: the same terms, rounded in another order; the
    # dtype's assert_close defaults (float32 rtol 1.3e-6) hold over six fields
    torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("reduce_sum", [True, False])
def test_pairwise_is_exact_to_second_order(reduce_sum: bool) -> None:
    e = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: ops.pairwise(t, reduce_sum), (e,))
    with torch.no_grad():
        assert torch.equal(ops.pairwise(e, reduce_sum), ops.pairwise_sum(e, reduce_sum))
