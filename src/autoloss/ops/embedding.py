"""Sparse embedding lookup whose gradient is already coalesced, and the batch sort it shares.

``F.embedding(sparse=True)`` returns one gradient row per occurrence (B·F rows, unsorted), and
the optimiser must sort and merge them (``coalesce``) every step. :func:`lookup` groups the
batch's ids by row once (:func:`group_rows`) and sums the gradient per distinct row
(:func:`sum_rows`): the same gradient, already coalesced. Tables of one model that look up the
same batch with the same offsets share that grouping (:data:`SHARED_SORT`).

Switch (``autoloss.ops.use_reference``): ``"embedding"`` makes :func:`lookup` PyTorch's
``F.embedding(ids, weight, sparse=True)``; ``"shared_sort"`` makes every lookup group its ids on
its own.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch.nn import functional as F

from autoloss.ops.switch import reference

__all__ = ["SHARED_SORT", "BatchRows", "SharedSort", "group_rows", "lookup", "sum_rows"]


class BatchRows(NamedTuple):
    """A batch's table ids grouped by row: what a lookup's backward needs to sum per row.

    ``uniq`` (U,) the sorted distinct ids; ``inverse`` (N,) each occurrence's position among them;
    ``order`` (N,) the occurrences sorted by id; ``starts`` (U + 1,) where each distinct id's
    occurrences begin in ``order`` (the row pointers of the U x N occurrence matrix in CSR form).
    """

    uniq: torch.Tensor
    inverse: torch.Tensor
    order: torch.Tensor
    starts: torch.Tensor


def group_rows(ids: torch.Tensor, num_rows: int | None = None) -> BatchRows:
    """Group the ids (any shape, flattened) by row: one stable sort, one pass over it.

    With ``num_rows`` (the table's size) below 2**31 the sort runs on 32-bit keys, for which
    torch's radix sort makes half the passes.
    """
    flat = ids.reshape(-1)
    narrow = num_rows is not None and num_rows < 2**31 and flat.dtype == torch.int64
    sorted_ids, order = torch.sort(flat.to(torch.int32) if narrow else flat, stable=True)
    uniq, inverse_sorted, counts = torch.unique_consecutive(
        sorted_ids, return_inverse=True, return_counts=True
    )
    uniq = uniq.to(flat.dtype)
    inverse = torch.empty_like(inverse_sorted).scatter_(0, order, inverse_sorted)
    starts = torch.zeros(uniq.numel() + 1, dtype=torch.long, device=flat.device)
    torch.cumsum(counts, 0, out=starts[1:])
    return BatchRows(uniq, inverse, order, starts)


def sum_rows(rows: BatchRows, g: torch.Tensor) -> torch.Tensor:
    """Sum the gradient rows ``g`` (N, W) of the occurrences per distinct id: (U, W).

    On the CPU a table wider than one column multiplies by the occurrence matrix in CSR form
    (MKL's sparse-dense product); ``index_add_`` elsewhere (the faster of the two for one column,
    and on CUDA).
    """
    if g.device.type == "cpu" and g.shape[1] > 1 and g.dtype in (torch.float32, torch.float64):
        ones = torch.ones(rows.order.numel(), dtype=g.dtype)
        shape = (rows.uniq.numel(), g.shape[0])
        if not _csr_warned:
            _first_csr()
        occurrences = torch.sparse_csr_tensor(
            rows.starts, rows.order, ones, shape, check_invariants=False
        )
        return occurrences @ g
    out = torch.zeros(rows.uniq.numel(), g.shape[1], dtype=g.dtype, device=g.device)
    return out.index_add_(0, rows.inverse, g)


_csr_warned = False


def _first_csr() -> None:
    """Build a first CSR tensor with PyTorch's once-per-process "CSR support is in beta" warning
    silenced (the CSR-times-dense product has long been stable; the warning would otherwise reach
    every user's first training step). Later constructions do not warn."""
    global _csr_warned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        one = torch.zeros(1, dtype=torch.long)
        torch.sparse_csr_tensor(
            one.repeat(2), one[:0], torch.ones(0), (1, 1), check_invariants=False
        )
    _csr_warned = True


class _UniqueRowsLookup(torch.autograd.Function):
    """``weight[ids]`` whose gradient is a *coalesced* sparse tensor over the unique rows, summed
    per distinct row by :func:`sum_rows` from the grouping ``rows`` of ``ids``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, weight: torch.Tensor, ids: torch.Tensor, rows: BatchRows
    ) -> torch.Tensor:
        ctx.rows = rows  # index tensors outside the graph: no reference cycle through autograd
        ctx.weight_shape = weight.shape
        return weight.index_select(0, ids.reshape(-1)).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        rows: BatchRows = ctx.rows
        summed = sum_rows(rows, grad.reshape(-1, grad.shape[-1]))
        gw = torch.sparse_coo_tensor(
            rows.uniq.unsqueeze(0), summed, ctx.weight_shape, is_coalesced=True,
            check_invariants=False,
        )  # fmt: skip
        return gw, None, None


class SharedSort:
    """The grouping of the last training batch's ids, shared by the tables that look it up.

    The tables of one model that look up the same batch with the same offsets (the field
    embedding and the linear term of DeepFM, FM, Wide & Deep, ...) need the same sort, the
    largest part of a lookup. The entry is keyed by the very tensor ``x`` of local ids (and its
    version, so that an in-place change misses) and the offsets as numbers.

    Lifetime: one entry, replaced whole by the next lookup of another batch, so that a reader never
    sees parts of two batches; until then it holds that batch's ``x`` and its :class:`BatchRows`
    (index tensors the size of the batch). :meth:`clear` drops it. One instance per process,
    :data:`SHARED_SORT`. Nothing is kept or read while compiling or exporting (a traced graph
    computes its own), nor with the switch ``"shared_sort"`` on.
    """

    def __init__(self) -> None:
        self._last: tuple[torch.Tensor, int, tuple[int, ...], BatchRows] | None = None

    def rows(
        self,
        x: torch.Tensor,
        ids: torch.Tensor,
        offsets: tuple[int, ...],
        num_rows: int | None = None,
    ) -> BatchRows:
        """``ids`` (= ``x`` + ``offsets``) grouped by row (:func:`group_rows`), computed once per
        batch."""
        if reference("shared_sort"):
            return group_rows(ids, num_rows)
        last = self._last
        compiling = torch.compiler.is_compiling()
        if (
            not compiling
            and last is not None
            and last[0] is x
            and last[1] == x._version
            and last[2] == offsets
        ):
            return last[3]
        rows = group_rows(ids, num_rows)
        if not compiling:
            self._last = (x, x._version, offsets, rows)
        return rows

    def clear(self) -> None:
        """Drop the entry (and the batch tensors it holds)."""
        self._last = None


#: The process's shared sort (see :class:`SharedSort` for its lifetime).
SHARED_SORT = SharedSort()


def lookup(
    weight: torch.Tensor, ids: torch.Tensor, x: torch.Tensor, offsets: tuple[int, ...]
) -> torch.Tensor:
    """``weight[ids]`` (``ids`` = local ids ``x`` + per-field ``offsets``) with a sparse gradient.

    Where a gradient is taken (and not while tracing), the gradient comes coalesced from
    :class:`_UniqueRowsLookup` with the grouping of :data:`SHARED_SORT`; otherwise, and with the
    switch ``"embedding"`` on, ``F.embedding(ids, weight, sparse=True)``. Both give the same
    values; the gradients agree up to the order of summation.
    """
    if (
        weight.requires_grad
        and torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not reference("embedding")
    ):
        rows = SHARED_SORT.rows(x, ids, offsets, weight.shape[0])
        return _UniqueRowsLookup.apply(weight, ids, rows)
    return F.embedding(ids, weight, sparse=True)
