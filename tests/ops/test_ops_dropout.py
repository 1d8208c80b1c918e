"""``ops.dropout`` (16-bit uniforms from SFC64 words) against ``F.dropout``.

The two draw different random numbers, so their masks differ: what must agree is everything
else (the kept values' scale, the keep rate, the gradient through the mask, evaluation), and the
switch must give ``F.dropout`` itself, draw for draw."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.nn import functional as F

from autoloss import ops
from autoloss.ops import dropout

KERNELS_TESTED = ("dropout",)


def test_dropout_keeps_one_minus_p_scaled_and_passes_gradient_through_the_mask() -> None:
    x = torch.full((400, 500), 3.0, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    y = dropout(x, 0.2)
    kept = y != 0
    # 200,000 draws: the keep rate is within 5 standard deviations (0.0045) of 0.8
    assert abs(kept.double().mean().item() - 0.8) < 0.0045
    scale = 65536 / (65536 - round(0.2 * 65536))
    assert torch.equal(y[kept], torch.full_like(y[kept], 3.0 * scale))
    y.sum().backward()
    assert torch.equal(x.grad, kept.double() * scale)
    torch.manual_seed(0)
    assert torch.equal(dropout(x, 0.2), y)  # the default generator reproduces the mask
    assert not torch.equal(dropout(x, 0.2), y)


def test_dropout_masks_are_independent_across_elements() -> None:
    """Each 64-bit word feeds four neighbouring elements: their keep decisions must not agree
    more often than independent draws would (p = 0.5: agreement 0.5)."""
    torch.manual_seed(1)
    kept = (dropout(torch.ones(100_000, 4), 0.5) != 0).double()
    for a, b in itertools.combinations(range(4), 2):
        agree = (kept[:, a] == kept[:, b]).double().mean().item()
        assert abs(agree - 0.5) < 0.01  # 6 standard deviations of 100,000 draws


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_agrees_with_torch_dropout_in_distribution(p: float, device: str) -> None:
    """Same keep rate (both within 5 standard deviations of 1 - p over 200,000 draws), kept
    values scaled by the inverse keep rate (ours: of p rounded to a multiple of 1/65536, so the
    scales differ by at most 2**-16 relative), gradient = the output's mask times the scale."""
    x = torch.full((400, 500), 2.0, dtype=torch.float64, device=device, requires_grad=True)
    sd = (p * (1 - p) / x.numel()) ** 0.5
    torch.manual_seed(3)
    for fn in (dropout, F.dropout):
        y = fn(x, p, True)
        kept = y != 0
        assert abs(kept.double().mean().item() - (1 - p)) < 5 * sd
        torch.testing.assert_close(
            y[kept], torch.full_like(y[kept], 2.0 / (1 - p)), rtol=2**-16, atol=0
        )
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(g, y.detach() / 2.0)


def test_the_switch_gives_torch_dropout_draw_for_draw(device: str) -> None:
    x = torch.randn(64, 32, device=device)
    for training in (True, False):
        torch.manual_seed(5)
        expected = F.dropout(x, 0.3, training)
        torch.manual_seed(5)
        with ops.use_reference("dropout"):
            assert torch.equal(dropout(x, 0.3, training), expected)
    assert torch.equal(dropout(x, 0.3, training=False), x)  # evaluation: the same either way
