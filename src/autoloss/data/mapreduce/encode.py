"""The last map of a map-reduce ``prepare``: every input's rows written into the final arrays.

The driver knows, once the inputs are counted, how many rows of each split every input holds,
so where its rows go: the final ``.npy`` files are created at their full size first
(:func:`allocate_splits`: the header the serial writer writes, then the file extended), and one
task per input (:func:`encode_file`) reads its spilled chunks back, gives them their final ids
(the chunk's table from the reduce, ``final.bin``), quantile buckets and standardised dense
values exactly as the serial finish does, and writes each split's rows at their place with
``pwrite``. Inputs write disjoint rows, so the tasks run side by side, and a task run again
writes the same bytes again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoloss.data.finalize import quantile_ids
from autoloss.data.mapreduce.layout import Block, ChunkInfo, FileSpill, Plan, spilled_rows
from autoloss.data.store import SPLITS


@dataclass(frozen=True)
class OutArray:
    """One final ``.npy`` file, allocated: where its rows start and how long one is."""

    path: Path
    offset: int  # the header's bytes
    row_bytes: int


#: The arrays of one split by name: ``x``, ``y``, and ``dense`` / ``bags`` where the data has them.
SplitArrays = dict[str, OutArray]


def allocate(path: Path, shape: tuple[int, ...], dtype: str) -> OutArray:
    """Create ``path`` as a ``.npy`` of ``shape`` (the serial writer's header; the data, zeros
    until written, not stored until then)."""
    dt = np.dtype(dtype)
    shape = tuple(int(n) for n in shape)
    header = {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": shape}
    row_bytes = dt.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    with path.open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + row_bytes * shape[0])
    return OutArray(path, offset, row_bytes)


def allocate_splits(plan: Plan, rows: list[int], max_bag: int) -> list[SplitArrays]:
    """Every split's directory and final arrays, allocated (``rows``: each split's rows)."""
    fields = plan.fmt.fields
    ncat = sum(f.kind == "categorical" for f in fields)
    ndense = sum(f.kind == "dense" for f in fields)
    nbags = len(plan.bag_fields)
    out = []
    for name, n in zip(SPLITS, rows):
        d = plan.build / name
        d.mkdir()
        arrays = {
            "x": allocate(d / "x.npy", (n, ncat), "int32"),
            "y": allocate(d / "y.npy", (n,), "int32"),
        }
        if ndense:
            arrays["dense"] = allocate(d / "dense.npy", (n, ndense), "float32")
        if nbags:
            arrays["bags"] = allocate(d / "bags.npy", (n, nbags, max_bag), "int32")
        out.append(arrays)
    return out


@dataclass(frozen=True)
class EncodeJob:
    """Write the rows of the ``index``-th input into the final arrays."""

    plan: Plan
    index: int
    chunks: tuple[ChunkInfo, ...]
    first_row: int  # its first row's number in the whole input stream
    starts: tuple[int, ...]  # the row of each split's final arrays its first row of it goes to
    arrays: tuple[SplitArrays, ...]  # each split's final arrays
    edges: dict[str, np.ndarray]  # quantile-bucketed fields: the bucket edges
    moments: dict[str, tuple[float, float]]  # dense fields: mean, std
    max_bag: int


def encode_file(job: EncodeJob) -> None:
    """Encode one input's spilled rows and write them at their rows of the final arrays."""
    spill = job.plan.spill(job.index)
    offsets = [spill.chunk_offsets(j) for j in range(len(job.plan.counted))]
    row = list(job.starts)
    fds = [{k: os.open(a.path, os.O_WRONLY) for k, a in arrays.items()} for arrays in job.arrays]
    try:
        parts = ("x", "num", "y", "bags")
        rows = spilled_rows(job.plan, job.index, job.chunks, job.first_row, parts)
        for c, (block, split) in enumerate(rows):
            final = _final_arrays(job, spill, offsets, c, block)
            present = np.bincount(split, minlength=len(SPLITS))
            for s in np.flatnonzero(present):
                take = None if present[s] == len(split) else np.flatnonzero(split == s)
                for name, values in final.items():
                    part = values if take is None else values.take(take, axis=0)
                    _write_at(fds[s][name], part, job.arrays[s][name], row[s])
                row[s] += int(present[s])
    finally:
        for fd in (fd for split_fds in fds for fd in split_fds.values()):
            os.close(fd)


def _final_arrays(
    job: EncodeJob, spill: FileSpill, offsets: list[np.ndarray], chunk: int, block: Block
) -> dict[str, np.ndarray]:
    """The final rows of a chunk, row-major, as the serial finish computes them."""
    plan = job.plan
    cats = [f for f in plan.fmt.fields if f.kind == "categorical"]
    vocab_row = {f.name: j for j, f in enumerate(plan.vocab_fields)}
    number_row = {f.name: j for j, f in enumerate(plan.number_fields)}
    x = np.empty((len(cats), len(block.y)), dtype=np.int32)
    for i, f in enumerate(cats):
        if f.name in vocab_row:
            j = vocab_row[f.name]
            np.take(spill.chunk_table(j, "final.bin", offsets[j], chunk), block.x[j], out=x[i])
        else:
            x[i] = quantile_ids(block.nums[number_row[f.name]], job.edges[f.name])
    final = {"x": x.T, "y": block.y}
    dense = [f for f in plan.fmt.fields if f.kind == "dense"]
    if dense:
        values = np.empty((len(dense), len(block.y)), dtype=np.float32)
        for i, f in enumerate(dense):
            mean, std = job.moments[f.name]
            v = block.nums[number_row[f.name]]
            values[i] = np.nan_to_num((v - mean) / std, nan=0.0)
        final["dense"] = values.T
    if plan.bag_fields:
        final["bags"] = _final_bags(job, spill, offsets, chunk, block)
    return final


def _final_bags(
    job: EncodeJob, spill: FileSpill, offsets: list[np.ndarray], chunk: int, block: Block
) -> np.ndarray:
    """Final ids of the multi-valued fields of a chunk, (rows, fields, max_bag), -1 padded."""
    k = len(block.y)
    nv = len(job.plan.vocab_fields)
    bags = np.full((k, len(block.bags), job.max_bag), -1, dtype=np.int32)
    for b, (lengths, ids) in enumerate(block.bags):
        table = spill.chunk_table(nv + b, "final.bin", offsets[nv + b], chunk)
        vals = table[ids]
        rows = np.repeat(np.arange(k), lengths)
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(vals.size) - np.repeat(starts, lengths)
        bags[rows, b, pos] = vals
    return bags


def _write_at(fd: int, values: np.ndarray, array: OutArray, row: int) -> None:
    """Write ``values`` (rows of ``array``) from row ``row`` on."""
    if not values.nbytes:
        return
    data = np.ascontiguousarray(values).data.cast("B")
    offset = array.offset + row * array.row_bytes
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written
