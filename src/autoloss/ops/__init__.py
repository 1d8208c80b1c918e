"""The custom kernels of a training step, each with a switch back to PyTorch's own op.

| module | kernel | PyTorch reference (``use_reference(NAME)``) |
|---|---|---|
| :mod:`autoloss.ops.embedding` | :func:`lookup`: sparse lookup, gradient summed per distinct row (coalesced) | ``"embedding"``: ``F.embedding(sparse=True)`` |
| :mod:`autoloss.ops.embedding` | :data:`SHARED_SORT`: one grouping of a batch's ids for all of a model's tables | ``"shared_sort"``: one per table |
| :mod:`autoloss.ops.interaction` | :func:`pairwise`: the FM term with a one-expression backward | ``"pairwise"``: autograd of :func:`pairwise_sum` |
| :mod:`autoloss.ops.softmax` | :func:`row_softmax`, :func:`row_log_softmax` over the transposed view | ``"softmax"``: ``F.softmax`` / ``F.log_softmax`` over dim -1 |
| :mod:`autoloss.ops.dropout_mask` | :func:`dropout`: masks from 16-bit uniforms of SFC64 words | ``"dropout"``: ``F.dropout`` |

The switch (:mod:`autoloss.ops.switch`) is read by each kernel on every call:
``with autoloss.ops.use_reference(): ...`` (all kernels) or ``use_reference("dropout")`` (one),
and ``AUTOLOSS_REFERENCE_OPS=1`` (or a comma-separated list of names) for the process's starting
state. ``tests/ops/`` checks that every kernel agrees with its reference; what each one gains is
measured in ``docs/benchmarks.md``, "Kernels".

Its own layer, right above the shared bottom (``errors``, ``files``, ...): it imports nothing
else of autoloss, and ``models``, ``losses`` and ``policies`` take their kernels from it
(``tests/test_layering.py``).
"""

from __future__ import annotations

from autoloss.ops.dropout_mask import dropout
from autoloss.ops.embedding import SHARED_SORT, BatchRows, SharedSort, group_rows, lookup, sum_rows
from autoloss.ops.interaction import pairwise, pairwise_sum
from autoloss.ops.softmax import row_log_softmax, row_softmax
from autoloss.ops.switch import KERNELS, reference, reference_kernels, use_reference

__all__ = [
    "KERNELS",
    "SHARED_SORT",
    "BatchRows",
    "SharedSort",
    "dropout",
    "group_rows",
    "lookup",
    "pairwise",
    "pairwise_sum",
    "reference",
    "reference_kernels",
    "row_log_softmax",
    "row_softmax",
    "sum_rows",
    "use_reference",
]
