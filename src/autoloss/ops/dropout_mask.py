"""Dropout with cheaper masks on the CPU: four 16-bit uniforms per 64-bit word of NumPy's SFC64.

PyTorch draws a CPU dropout mask one double-precision Bernoulli sample per element. Here each
64-bit random word gives four 16-bit uniforms: an element is kept when its uniform is at least
``round(p * 65536)``, so the drop rate is ``p`` rounded to a multiple of 1/65536 (0.2 becomes
0.199997), and kept values are scaled by the exact inverse of the keep rate. The words come from
NumPy's SFC64 generator seeded with one 64-bit draw from torch's default generator, so
``torch.manual_seed`` (and a checkpoint's saved RNG state) reproduces every mask.

Switch (``autoloss.ops.use_reference``): ``"dropout"`` makes :func:`dropout` ``F.dropout``
(PyTorch's masks: other draws, the same distribution up to the rounding of ``p``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from autoloss.ops.switch import reference

__all__ = ["dropout", "keep_mask"]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the masks of :func:`keep_mask` on the CPU. On other
    devices, in evaluation, where ``p`` rounds to 0 or 1, and with the switch ``"dropout"`` on:
    ``F.dropout``."""
    cut = round(p * 65536)
    if not training or x.device.type != "cpu" or not 0 < cut < 65536 or reference("dropout"):
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, cut, x.dtype)  # autograd keeps the mask alone, as dropout does


def keep_mask(shape: torch.Size, cut: int, dtype: torch.dtype) -> torch.Tensor:
    """0 or ``65536 / (65536 - cut)`` per element, kept where a 16-bit uniform is >= ``cut``."""
    n = shape.numel()
    seed = int(torch.empty((), dtype=torch.int64).random_(-(2**63), None)) & (2**64 - 1)
    words = np.random.SFC64(seed).random_raw((n + 3) // 4)
    wide = np.dtype(np.float64 if dtype == torch.float64 else np.float32)
    mask: np.ndarray = (words.view(np.uint16)[:n] >= cut).astype(wide)
    np.multiply(mask, wide.type(65536 / (65536 - cut)), out=mask)
    return torch.from_numpy(mask).view(shape).to(dtype)
