"""``row_softmax`` / ``row_log_softmax`` against PyTorch's softmax over the last dimension."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from autoloss import ops
from autoloss.ops import row_log_softmax, row_softmax

KERNELS_TESTED = ("softmax",)


@pytest.mark.parametrize("width", [1, 2, 4, 5, 15, 16, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_softmaxes_equal_torch_over_the_last_dimension(
    width: int, dtype: torch.dtype, device: str
) -> None:
    # Narrow rows take the transposed route, wide ones F.*softmax. The transposed kernel sums the
    # exponentials of a row in another order than the last-dimension one, so values and
    # gradients agree within rounding (assert_close's defaults for the dtype: a few ulps), not
    # bit for bit (bit-equal log-softmax holds only where both kernels vectorise alike, e.g.
    # AVX-512 but not AVX2).
    gen = torch.Generator().manual_seed(width)
    z = (torch.randn(300, width, generator=gen, dtype=dtype) * 6).to(device).requires_grad_()
    w = torch.randn(300, width, generator=gen, dtype=dtype).to(device)
    for ours, theirs in ((row_softmax, torch.softmax), (row_log_softmax, torch.log_softmax)):
        a, b = ours(z), theirs(z, -1)
        assert a.shape == (300, width) and a.is_contiguous()
        torch.testing.assert_close(a, b)
        ga = torch.autograd.grad((a * w).sum(), z)[0]
        gb = torch.autograd.grad((b * w).sum(), z)[0]
        torch.testing.assert_close(ga, gb)
        with ops.use_reference("softmax"):  # the reference is torch's op itself: bit for bit
            assert torch.equal(ours(z), b)
    assert row_softmax(z[:0]).shape == (0, width)


def test_row_softmax_is_twice_differentiable() -> None:
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(row_softmax, (z,))
    assert torch.autograd.gradgradcheck(row_log_softmax, (z,))


def test_a_policy_built_before_the_switch_follows_it() -> None:
    """The switch is read per call: losses and policies built earlier take the reference too."""
    from autoloss.losses import example_ce

    z = torch.randn(50, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (50,))
    with ops.use_reference("softmax"):
        assert torch.equal(example_ce(z, y), F.cross_entropy(z, y, reduction="none"))
    torch.testing.assert_close(example_ce(z, y), F.cross_entropy(z, y, reduction="none"))
