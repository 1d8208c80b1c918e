"""Counting the training rows of one input: :func:`count_file`, and :func:`sample_file`.

Once every input has been scanned, the driver knows how many rows each one read, so the first
row number of each input in the whole stream, and with it the split of every row (the seeded
hash of its number, exactly as the serial pass computes it). One task per input then reads the
input's spilled chunks back and gives:

* for each field with a vocabulary, the training rows of each of the input's distinct values
  (``v<J>/counts.npy``), the map of the vocabulary's map-reduce;
* the good rows and class counts of each split;
* per chunk, the sum and the sum of squares of each number field's training values: the
  serial pass adds them up chunk by chunk, so the driver adds these in the same order and the
  means and standard deviations of dense fields come out bit for bit the same;
* how many random keys the quantile sample draws for the input.

With quantile-bucketed fields, :func:`sample_file` then draws the input's random keys from the
seed's generator advanced past the keys of the inputs before it, which are the keys the serial
pass draws for these values (its one generator runs through the inputs in order), and keeps
the input's bottom-k sample; the driver keeps the bottom-k of their union.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from autoloss.data.mapreduce.layout import Block, ChunkInfo, Plan, spilled_rows
from autoloss.data.parse_pass import NumberStats


@dataclass(frozen=True)
class CountJob:
    """Count (or sample) the ``index``-th input, whose first row is row ``first_row`` of the
    whole input stream."""

    plan: Plan
    index: int
    chunks: tuple[ChunkInfo, ...]
    distinct: tuple[int, ...]  # distinct values of the input per vocabulary field
    first_row: int
    draws_before: int = 0  # random keys of the quantile sample drawn for the inputs before


@dataclass
class CountResult:
    """What counting one input tells the driver."""

    rows: list[int]  # good rows of each split
    labels: list[np.ndarray]  # class counts of each split
    moments: np.ndarray  # float64 (chunks, number fields, 2): training values' sum, sum of squares
    values: np.ndarray  # int64 (chunks, number fields): training values (not missing)
    draws: int  # random keys the quantile sample draws for this input


def _rows(job: CountJob, parts: Sequence[str]) -> Iterator[tuple[Block, np.ndarray]]:
    return spilled_rows(job.plan, job.index, job.chunks, job.first_row, parts)


def count_file(job: CountJob) -> CountResult:
    """The training counts of one input (see the module doc)."""
    plan, spill = job.plan, job.plan.spill(job.index)
    nv, nn = len(plan.vocab_fields), len(plan.number_fields)
    offsets = [spill.chunk_offsets(j) for j in range(len(plan.counted))]
    counts = [np.zeros(n, dtype=np.int64) for n in job.distinct]
    out = CountResult(
        [0, 0, 0],
        [np.zeros(0, dtype=np.int64) for _ in range(3)],
        np.zeros((len(job.chunks), nn, 2)),
        np.zeros((len(job.chunks), nn), dtype=np.int64),
        0,
    )
    for c, (block, split) in enumerate(_rows(job, ("x", "num", "y", "bags"))):
        train = split == 0

        def add(j: int, ids: np.ndarray, c: int = c) -> None:
            table = spill.chunk_table(j, "to_file.bin", offsets[j], c)
            counts[j][table] += np.bincount(ids, minlength=table.size)

        for j in range(nv):
            add(j, block.x[j][train])
        for k, (lengths, ids) in enumerate(block.bags):
            add(nv + k, ids[np.repeat(train, lengths)])
        _add_rows(out, split, block.y)
        _add_moments(out, plan, c, block.nums, train)
    for j, n in enumerate(counts):
        np.save(spill.vocab(j, "counts.npy"), n)
    return out


def _add_rows(out: CountResult, split: np.ndarray, y: np.ndarray) -> None:
    """Rows and class counts of each split (class counts grown as the serial spill's are)."""
    present = np.bincount(split, minlength=3)
    for s in range(3):
        if not present[s]:
            continue
        out.rows[s] += int(present[s])
        ys = y if present[s] == len(y) else y[split == s]
        out.labels[s] = merge_class_counts(out.labels[s], np.bincount(ys))


def merge_class_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sum of two class-count arrays (the shorter one padded with zeros)."""
    if a.size < b.size:
        a, b = b, a
    return a + np.pad(b, (0, a.size - b.size))


def _add_moments(
    out: CountResult, plan: Plan, chunk: int, nums: np.ndarray, train: np.ndarray
) -> None:
    """The chunk's training values of each number field: sum, sum of squares, count."""
    for j, f in enumerate(plan.number_fields):
        v = nums[j][train]
        v = v[~np.isnan(v)]
        out.moments[chunk, j] = float(v.sum()), float(np.square(v).sum())
        out.values[chunk, j] = v.size
        if f.quantiles is not None:
            out.draws += int(v.size)


def sample_file(job: CountJob) -> None:
    """The bottom-k sample of the input's training values of each quantile-bucketed field,
    with the keys the serial pass draws for them (``sample.npz``: ``keys<J>``, ``values<J>``
    for the number field ``J``)."""
    plan = job.plan
    pcg = np.random.PCG64(plan.opts.seed)  # the serial pass's generator (default_rng's)
    pcg.advance(job.draws_before)  # one 64-bit draw per key
    rng = np.random.Generator(pcg)
    stats = [NumberStats() for _ in plan.number_fields]
    for block, split in _rows(job, ("num",)):
        train = split == 0
        for j, f in enumerate(plan.number_fields):
            if f.quantiles is not None:
                stats[j].add(block.nums[j][train], rng)
    arrays = {}
    for j, f in enumerate(plan.number_fields):
        if f.quantiles is not None:
            arrays[f"keys{j}"], arrays[f"values{j}"] = stats[j].keys, stats[j].sample
    np.savez(plan.spill(job.index).path("sample.npz"), **arrays)  # type: ignore[arg-type]
