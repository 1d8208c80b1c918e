"""The factorisation machine's pairwise term with a one-expression backward.

Switch (``autoloss.ops.use_reference``): ``"pairwise"`` makes :func:`pairwise` the plain
expression :func:`pairwise_sum`, differentiated by autograd.
"""

from __future__ import annotations

import torch

from autoloss.ops.switch import reference

__all__ = ["pairwise", "pairwise_sum"]


def pairwise_sum(emb: torch.Tensor, reduce_sum: bool) -> torch.Tensor:
    """``0.5 * ((sum_f e)^2 - sum_f e^2)`` = ``sum_{i<j} e_i ⊙ e_j``: (B, F, D) -> (B, D), or
    (B, 1) summed over D (the square-of-sum trick, O(F·D))."""
    s = emb.sum(dim=1)
    out = 0.5 * (s * s - (emb * emb).sum(dim=1))
    return out.sum(dim=1, keepdim=True) if reduce_sum else out


class _PairwiseInteraction(torch.autograd.Function):
    """:func:`pairwise_sum` with its gradient in one expression, ``(sum_f e - e_i) * grad``.

    Autograd's own backward of the square-of-sum trick makes five passes over the (B, F, D)
    embeddings (both factors of ``e * e``, the two sums' expansions, their accumulation); this
    makes one (``addcmul``). The forward is :func:`pairwise_sum` itself, so training and
    evaluation compute the same values; the backward is written in differentiable operations on
    the saved embeddings, so a second derivative (the unrolled hypergradient) is exact too.
    """

    @staticmethod
    def forward(ctx, emb: torch.Tensor, reduce_sum: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(emb)
        ctx.reduce_sum = reduce_sum
        return pairwise_sum(emb, reduce_sum)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (emb,) = ctx.saved_tensors
        g = grad.unsqueeze(2) if ctx.reduce_sum else grad.unsqueeze(1)  # (B, 1, 1) or (B, 1, D)
        # s·g - e·g: one pass over (B, F, D) (s·g is only (B, 1, D))
        return torch.addcmul(emb.sum(dim=1, keepdim=True) * g, emb, g, value=-1), None


def pairwise(emb: torch.Tensor, reduce_sum: bool) -> torch.Tensor:
    """:func:`pairwise_sum`, through :class:`_PairwiseInteraction` where a gradient is taken
    (not while tracing or compiling, nor with the switch ``"pairwise"`` on). The values are the
    same either way."""
    if (
        emb.requires_grad
        and torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not reference("pairwise")
    ):
        return _PairwiseInteraction.apply(emb, reduce_sum)
    return pairwise_sum(emb, reduce_sum)
