"""Data parallelism for a run across processes: each rank's part of every batch, and the
collectives that keep the replicas of the model and the policy identical (:class:`Replicas`).

Each rank reads the global batch and keeps its own contiguous part (:class:`ShardedBatches`), so
the same configuration means the same optimisation at any world size. After the backward pass the
gradients are averaged explicitly, weighted by the rows of each part: the dense ones with one
``all_reduce``, the sparse embedding tables by an ``all_gather`` of the rows each rank touched and
their gradients, summed into the same coalesced sparse gradient on every rank (NCCL has no sparse
all-reduce). Every rank then applies the same update.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from autoloss.data.batches import BatchIterator
from autoloss.data.spec import Batch
from autoloss.train.distributed import Context
from autoloss.train.optim import fused_parameters, split_parameters

# ---------------------------------------------------------------------------------------------
# Sharding


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that ``rank`` takes: contiguous, disjoint, covering, sizes
    differing by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


def batch_part(batch: Batch, lo: int, hi: int) -> Batch:
    """Rows ``[lo, hi)`` of ``batch``."""

    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[lo:hi]

    return Batch(
        x=batch.x[lo:hi],
        y=batch.y[lo:hi],
        dense=cut(batch.dense),
        bags=cut(batch.bags),
        extra=batch.extra,
        rows=cut(batch.rows),
    )


class ShardedBatches:
    """The global batches of ``batches``, each cut into ``world_size`` contiguous parts; rank
    ``rank`` gets its part. The union of the parts of a step is the batch one process would train
    on at that step. A last batch with fewer rows than processes is dropped (each part needs a
    row)."""

    def __init__(self, batches: BatchIterator, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        n = len(self.batches)
        last = self.batches.shard_rows - (n - 1) * self.batches.batch_size
        return n - 1 if n and not self.batches.drop_last and last < self.world_size else n

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        for batch in self.batches.epoch(epoch, start):
            if len(batch) < self.world_size:
                return
            yield batch_part(batch, *shard_bounds(len(batch), self.rank, self.world_size))


def eval_batches(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """The batch numbers ``[first, last)`` of ``count`` evaluation batches that ``rank`` scores."""
    return shard_bounds(count, rank, world_size)


# ---------------------------------------------------------------------------------------------
# Collectives


def _all_gather_rows(ctx: Context, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor (same length on one rank, any length across ranks) gathered along dim 0,
    concatenated in rank order, on every rank."""
    size = torch.tensor([tensors[0].shape[0]], dtype=torch.int64, device=ctx.device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    longest = max(counts)
    out = []
    for t in tensors:
        padded = t.new_zeros((longest, *t.shape[1:]), device=ctx.device)
        padded[: t.shape[0]] = t.to(ctx.device)
        parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device))
    return out


def average_dense(ctx: Context, params: Sequence[torch.Tensor], rows: int) -> float:
    """Replace each ``.grad`` by ``Σ_r n_r g_r / Σ_r n_r`` (``n_r``: this rank's ``rows``); a
    gradient absent on every rank stays absent. Returns ``Σ_r n_r``. One all-reduce (float64)."""
    flat = [torch.tensor([float(rows)], dtype=torch.float64)]
    flat += [torch.tensor([0.0 if p.grad is None else 1.0], dtype=torch.float64) for p in params]
    for p in params:
        g = torch.zeros_like(p) if p.grad is None else p.grad
        flat.append(g.detach().reshape(-1).to(torch.float64) * rows)
    buf = torch.cat([t.to(ctx.device) for t in flat])
    dist.all_reduce(buf)
    total = float(buf[0])
    present, pos = buf[1 : 1 + len(params)], 1 + len(params)
    for p, flag in zip(params, present.tolist()):
        n = p.numel()
        grad = (buf[pos : pos + n] / total).view_as(p).to(device=p.device, dtype=p.dtype)
        p.grad = grad if flag > 0 else None
        pos += n
    return total


def average_sparse(ctx: Context, table: torch.Tensor, rows: int, total: float) -> None:
    """The same for a sparse embedding table: the rows each rank touched and their gradients are
    gathered and summed into one coalesced sparse gradient, identical on every rank."""
    idx, vals = _touched_rows(table)
    idx, vals = _all_gather_rows(ctx, [idx, vals.to(torch.float64) * rows])
    if idx.numel() == 0:
        table.grad = None
        return
    shape = table.shape
    merged = torch.sparse_coo_tensor(idx.unsqueeze(0), vals, shape, check_invariants=True)
    merged = merged.coalesce()
    table.grad = torch.sparse_coo_tensor(
        merged.indices(),
        (merged.values() / total).to(table.dtype),
        table.shape,
        is_coalesced=True,
        check_invariants=False,
    )


def _touched_rows(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row ids, row gradients) of a table's sparse gradient, merged; empty without one."""
    g = table.grad
    if g is None:
        empty = torch.zeros((0,), dtype=torch.int64, device=table.device)
        return empty, table.new_zeros((0, *table.shape[1:]))
    if not g.is_sparse:
        raise ValueError("a distributed run expects sparse gradients on embedding tables")
    g = g.coalesce()
    return g.indices()[0], g.values()


def _float_buffers(modules: Sequence[nn.Module], own: set[int]) -> list[torch.Tensor]:
    """The floating-point buffers, but those of a sharded table (ids ``own``)."""
    return [
        b for m in modules for b in m.buffers() if torch.is_floating_point(b) and id(b) not in own
    ]


def _state_tensors(modules: Sequence[nn.Module], own: set[int]) -> list[torch.Tensor]:
    """Every parameter and buffer, but a sharded table's (ids ``own``: each rank holds its own)."""
    return [t for m in modules for t in (*m.parameters(), *m.buffers()) if id(t) not in own]


class Replicas:
    """The collectives that keep the replicas of a distributed run identical.

    Built once the model and the policy exist: rank 0's initial state is broadcast, each rank's
    torch generator is re-seeded for its own dropout masks and Gumbel noise, and the policy's
    optimiser is given :meth:`average_policy_gradients`.
    """

    def __init__(self, ctx: Context, model: nn.Module, policy: nn.Module, seed: int) -> None:
        self.ctx = ctx
        self.modules = (model, policy)
        self.tables, self.dense = split_parameters(model)
        #: the tensors of the sharded tables, which each rank holds for itself
        self.own = fused_parameters(model)
        #: rows of the batch the policy's next step learns from (set by the trainer)
        self.policy_rows = 0
        self.broadcast_state()
        rank_seed = np.random.SeedSequence([seed, ctx.rank]).generate_state(1)[0]
        torch.manual_seed(int(rank_seed))
        set_sync = getattr(policy, "set_grad_sync", None)
        if callable(set_sync):
            set_sync(self.average_policy_gradients)

    def broadcast_state(self) -> None:
        """Every parameter and buffer of rank 0, on every rank."""
        for t in _state_tensors(self.modules, self.own):
            buf = t.detach().to(self.ctx.device)
            dist.broadcast(buf, 0)
            t.data.copy_(buf)

    def agree_step(self, finite: bool, rows: int) -> tuple[bool, int]:
        """(every rank's loss was finite, the rows of the global batch)."""
        flags = torch.tensor([0 if finite else 1, rows], dtype=torch.int64, device=self.ctx.device)
        dist.all_reduce(flags)
        return int(flags[0]) == 0, int(flags[1])

    def average_gradients(self, rows: int) -> None:
        """The recommender's gradients: their row-weighted mean over the ranks."""
        total = average_dense(self.ctx, self.dense, rows)
        for table in self.tables:
            average_sparse(self.ctx, table, rows, total)

    def average_policy_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """The policy's optimiser hook: the same for its parameters (``policy_rows``)."""
        average_dense(self.ctx, list(params), self.policy_rows)

    def average_buffers(self) -> None:
        """Running statistics (BatchNorm, SLF's loss scales) come from each rank's own rows:
        their mean over the ranks keeps the replicas identical."""
        bufs = _float_buffers(self.modules, self.own)
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).to(self.ctx.device, torch.float64) for b in bufs])
        dist.all_reduce(flat)
        flat /= self.ctx.world_size
        pos = 0
        for b in bufs:
            n = b.numel()
            b.copy_(flat[pos : pos + n].view_as(b))
            pos += n

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean over the ranks of each of ``values``."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(t)
        return (t / self.ctx.world_size).tolist()

    def main_decides(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (decisions taken on a clock)."""
        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.ctx.device)
        dist.broadcast(t, 0)
        return bool(t[0])

    def gather_states(self, state: Any) -> list[Any]:
        """Every rank's ``state`` (tensors, numbers, strings), in rank order. Sent as
        ``torch.save`` bytes: ``all_gather_object`` cannot unpickle tensors it did not move."""
        buf = io.BytesIO()
        torch.save(state, buf)
        out: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(out, buf.getvalue())
        return [torch.load(io.BytesIO(b), weights_only=True) for b in out]

    def gather_predictions(
        self, logits: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's rows of a split, concatenated in rank order (the split's order)."""
        t_logits, t_y = _all_gather_rows(
            self.ctx, [torch.from_numpy(np.ascontiguousarray(logits)), torch.from_numpy(y)]
        )
        return t_logits.numpy(), t_y.numpy()
