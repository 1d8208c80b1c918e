"""Softmax and log-softmax over the last dimension of a (B, K) tensor with few columns.

PyTorch's CPU kernel for the last dimension works one row at a time and vectorises within the
row, so rows narrower than a vector register run nearly scalar. Taken over dim 0 of the
transposed view, the same softmax vectorises across the rows; the result is copied back to a
contiguous (B, K) tensor, so that what is drawn "like" it (``rand_like``) fills the same
elements as a plain softmax's result would.

Switch (``autoloss.ops.use_reference``): ``"softmax"`` makes both functions
``F.softmax(z, -1)`` / ``F.log_softmax(z, -1)``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from autoloss.ops.switch import reference

__all__ = ["NARROW_ROW_BYTES", "row_log_softmax", "row_softmax"]

#: Rows narrower than this many bytes (one AVX-512 register) take the transposed route.
NARROW_ROW_BYTES = 64


def _narrow_rows(z: torch.Tensor) -> bool:
    return (
        z.device.type == "cpu"
        and z.dim() == 2
        and z.shape[1] * z.element_size() < NARROW_ROW_BYTES
        and not reference("softmax")
    )


def row_softmax(z: torch.Tensor) -> torch.Tensor:
    """``softmax(z, dim=-1)`` of a (B, K) tensor; narrow rows on the CPU over the transposed
    view. Values equal ``F.softmax``'s or differ in the last bit; autograd flows as through
    ``F.softmax``. Wider rows and other devices: ``F.softmax``."""
    return F.softmax(z.t(), 0).t().contiguous() if _narrow_rows(z) else F.softmax(z, -1)


def row_log_softmax(z: torch.Tensor) -> torch.Tensor:
    """``log_softmax(z, dim=-1)`` of a (B, K) tensor, by the same route as :func:`row_softmax`
    (equal to ``F.log_softmax`` within rounding)."""
    return F.log_softmax(z.t(), 0).t().contiguous() if _narrow_rows(z) else F.log_softmax(z, -1)
