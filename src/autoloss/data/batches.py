"""Whole-batch tensors from an encoded split: seeded shuffles, block shuffles, sharding.

A batch is always cut from the memory map in one operation: a contiguous slice when not
shuffling, otherwise ``np.take`` with the batch's indices sorted (sorted reads touch the memmap
front to back, which is what the page cache likes). Nothing here loops over rows.

Shuffling is seeded per epoch (``seed + epoch``) and identical on every rank, so the ranks of a
distributed run agree on the epoch's order and each takes its own contiguous part of it:
``rank`` gets positions ``[rank * n, (rank + 1) * n)`` with ``n = N // world_size``. The last
``N % world_size`` positions of the order are dropped so that every rank runs the same number of
steps (collectives would hang otherwise); with shuffling those dropped rows change every epoch.

Block shuffling (for splits larger than RAM, or when ``block_rows`` is given) permutes blocks of
``block_rows`` consecutive rows and then shuffles rows only inside a buffer of
``buffer_blocks`` consecutive blocks, so each batch reads a few contiguous regions of the file.

>>> it = BatchIterator(ds.split("train"), 2000, seed=1)   # doctest: +SKIP
>>> for batch in it.epoch(0): logits = model(*batch.inputs())  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from autoloss.data.spec import Batch
from autoloss.data.store import EncodedSplit
from autoloss.errors import ConfigError

# Splits whose arrays exceed this fraction of physical memory are block-shuffled by default.
_RAM_FRACTION = 0.5
DEFAULT_BLOCK_ROWS = 65_536


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume plenty
        return 1 << 40


def _nbytes(split: EncodedSplit) -> int:
    arrays = (split.x, split.y, split.dense, split.bags)
    return sum(int(a.nbytes) for a in arrays if a is not None)


class BatchIterator:
    """Iterate over one split in mini-batches of :class:`~autoloss.data.spec.Batch`.

    Args:
        split: an :class:`~autoloss.data.store.EncodedSplit` (or anything with ``x``, ``y``,
            ``dense``, ``bags`` arrays).
        batch_size: rows per batch.
        shuffle: shuffle each epoch with ``seed + epoch``.
        seed: base seed of the shuffles.
        rank, world_size: this process's shard of a distributed run.
        drop_last: drop the last, smaller batch of the shard.
        block_rows: use block shuffling with blocks of this many rows (default: only when the
            split's arrays exceed half of physical memory, then 65,536).
        buffer_blocks: how many consecutive blocks (of the shuffled block order) are mixed.
    """

    def __init__(
        self,
        split: EncodedSplit,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        block_rows: int | None = None,
        buffer_blocks: int = 16,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}", column="batch_size")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"invalid rank {rank} for world size {world_size}")
        if block_rows is not None and block_rows < 1:
            raise ConfigError(f"block_rows must be >= 1, got {block_rows}")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        if block_rows is None and _nbytes(split) > _RAM_FRACTION * _physical_memory():
            block_rows = DEFAULT_BLOCK_ROWS
        self.block_rows = block_rows
        self.buffer_blocks = max(1, int(buffer_blocks))
        self.num_rows = len(split)
        self.shard_rows = self.num_rows // world_size

    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        if self.drop_last:
            return self.shard_rows // self.batch_size
        return -(-self.shard_rows // self.batch_size)

    def order(self, epoch: int) -> np.ndarray | None:
        """This rank's row order for ``epoch`` (int64), or None for the contiguous order."""
        if not self.shuffle:
            return None
        rng = np.random.default_rng(self.seed + epoch)
        n = self.num_rows
        if self.block_rows is None:
            order = rng.permutation(n)
        else:
            order = self._block_order(rng, n, self.block_rows)
        start = self.rank * self.shard_rows
        return order[start : start + self.shard_rows]

    def _block_order(self, rng: np.random.Generator, n: int, block: int) -> np.ndarray:
        num_blocks = -(-n // block)
        starts = rng.permutation(num_blocks) * block
        order = np.empty(n, dtype=np.int64)
        pos = 0
        for g in range(0, num_blocks, self.buffer_blocks):  # per buffer of blocks, not per row
            group = starts[g : g + self.buffer_blocks]
            idx = np.concatenate([np.arange(s, min(s + block, n)) for s in group])
            rng.shuffle(idx)
            order[pos : pos + idx.size] = idx
            pos += idx.size
        return order

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Yield the batches of one epoch, from batch number ``start`` on (a resumed run)."""
        order = self.order(epoch)
        first = self.rank * self.shard_rows
        for b in range(start, len(self)):
            lo = b * self.batch_size
            hi = min(lo + self.batch_size, self.shard_rows)
            if order is None:
                yield self._slice(first + lo, first + hi)
            else:
                yield self._take(np.sort(order[lo:hi]))

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def _slice(self, lo: int, hi: int) -> Batch:
        s = self.split
        batch = _batch(
            s.x[lo:hi],
            s.y[lo:hi],
            None if s.dense is None else s.dense[lo:hi],
            None if s.bags is None else s.bags[lo:hi],
        )
        batch.rows = torch.arange(lo, hi, dtype=torch.int64)
        return batch

    def _take(self, idx: np.ndarray) -> Batch:
        s = self.split
        batch = _batch(
            np.take(s.x, idx, axis=0),
            np.take(s.y, idx, axis=0),
            None if s.dense is None else np.take(s.dense, idx, axis=0),
            None if s.bags is None else np.take(s.bags, idx, axis=0),
        )
        batch.rows = torch.from_numpy(idx.astype(np.int64))
        return batch


def _batch(
    x: np.ndarray, y: np.ndarray, dense: np.ndarray | None, bags: np.ndarray | None
) -> Batch:
    # astype copies out of the read-only memmap and widens to the int64 that embeddings want.
    return Batch(
        x=torch.from_numpy(x.astype(np.int64)),
        y=torch.from_numpy(y.astype(np.int64)),
        dense=None if dense is None else torch.from_numpy(np.array(dense, dtype=np.float32)),
        bags=None if bags is None else torch.from_numpy(bags.astype(np.int64)),
    )
