"""The map of a map-reduce ``prepare``: one task per input file, :func:`scan_file`.

It reads the file exactly as the serial parse pass does (the same chunks of ``--chunk-rows``
rows, the same conversion and bad-row checks: :mod:`autoloss.data.parse_pass`), gives each
categorical value its chunk-local id (:class:`~autoloss.data.vocab.FieldVocab`), and spills
every chunk's good rows (:class:`~autoloss.data.mapreduce.layout.BlockWriter`), so memory is a
few chunks in flight whatever the size of the file. Training rows are not counted here: a row's
split may depend on its number in the whole input stream, which is known only once every file
has been read (:mod:`autoloss.data.mapreduce.count` counts them).

At the end of the file each field's chunk dictionaries are merged into the file's distinct
values, in order of first appearance, with the position of every chunk-local id among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from autoloss.data.formats import ChunkData
from autoloss.data.mapreduce.layout import Block, BlockWriter, ChunkInfo, Plan
from autoloss.data.parse_pass import PassInput, bad_rows, convert_chunk
from autoloss.data.readers import BadRows, Chunk, iter_chunks, prefetch
from autoloss.data.store import SPLITS
from autoloss.data.vocab import FieldVocab, encode_values


@dataclass(frozen=True)
class FileJob:
    """One input file of the map-reduce: the ``index``-th input of the stream."""

    plan: Plan
    index: int
    inp: PassInput


@dataclass
class ScanResult:
    """What the scan of one input tells the driver (its rows stay in the spill files)."""

    chunks: list[ChunkInfo] = field(default_factory=list)
    bad: BadRows = field(default_factory=BadRows)
    time_range: dict[str, list[float]] = field(default_factory=dict)  # --split temporal
    max_bag: int = 0  # the longest bag of a good row
    types: list[pa.DataType | None] = field(default_factory=list)  # each vocabulary's tokens
    distinct: list[int] = field(default_factory=list)  # each vocabulary's distinct values

    @property
    def read(self) -> int:
        """Rows read from the file (bad ones included)."""
        return sum(c.read for c in self.chunks)


class _Scan:
    """The state of one file's scan."""

    def __init__(self, job: FileJob) -> None:
        self.job = job
        self.plan = job.plan
        self.spill = job.plan.spill(job.index)
        self.spill.reset()
        self.vocabs = [FieldVocab(self.spill.vocab_dir(j)) for j in range(len(self.plan.counted))]
        self.result = ScanResult()

    def chunk(self, chunk: Chunk | None, data: ChunkData) -> Block:
        """Check one converted chunk and encode its good rows chunk-locally."""
        read = data.n
        split = self._known_split(data)
        kept = None
        if chunk is not None:  # some row is bad: raise, or drop and count it
            opts = self.plan.opts
            drop = bad_rows(data, chunk, self.job.inp.bound.path, opts.skip_bad, self.result.bad)
            kept = np.flatnonzero(~drop).astype(np.int32)
            data = data.select(~drop)
            split = None if split is None else split[~drop]
        if self.plan.opts.cuts is not None:
            assert split is not None and data.time is not None
            _note_times(self.result.time_range, data.time, split)
        self.result.chunks.append(ChunkInfo(read, data.n, kept is not None))
        return self._block(data, split, kept)

    def _known_split(self, data: ChunkData) -> np.ndarray | None:
        """The split of every row read, where it does not depend on the row's number."""
        if self.job.inp.split is not None:
            return np.full(data.n, self.job.inp.split, dtype=np.uint8)
        if self.plan.opts.cuts is not None:
            assert data.time is not None
            return self.plan.opts.cuts.of_times(data.time)
        return None

    def _block(self, data: ChunkData, split: np.ndarray | None, kept: np.ndarray | None) -> Block:
        plan = self.plan
        x = np.empty((len(plan.vocab_fields), data.n), dtype=np.int32)
        for j, f in enumerate(plan.vocab_fields):
            x[j] = self.vocabs[j].local_ids(data.tokens[f.name], None)
        nums = np.empty((len(plan.number_fields), data.n), dtype=np.float64)
        for j, f in enumerate(plan.number_fields):
            nums[j] = data.numbers[f.name]
        bags = []
        for k, f in enumerate(plan.bag_fields):
            lists = data.bags[f.name]
            lengths = np.asarray(
                pc.list_value_length(lists).fill_null(0).to_numpy(), dtype=np.int64
            )
            ids = self.vocabs[len(plan.vocab_fields) + k].local_ids(pc.list_flatten(lists), None)
            bags.append((lengths, ids))
            if lengths.size:
                self.result.max_bag = max(self.result.max_bag, int(lengths.max()))
        assert data.y is not None
        return Block(x, nums, data.y, bags, split, kept)

    def finish(self) -> ScanResult:
        """Merge each field's chunk dictionaries into the file's distinct values."""
        for j, vocab in enumerate(self.vocabs):
            position, distinct = encode_values(vocab.dictionaries())
            position.astype(np.int32).tofile(self.spill.vocab(j, "to_file.bin"))
            np.save(self.spill.vocab(j, "sizes.npy"), np.asarray(vocab.sizes, dtype=np.int64))
            self.spill.write_distinct(j, distinct)
            self.result.types.append(vocab.value_type)
            self.result.distinct.append(len(distinct))
        return self.result


def scan_file(job: FileJob) -> ScanResult:
    """Read, check and chunk-locally encode one input file into its spill files."""
    scan = _Scan(job)
    b, opts = job.inp.bound, job.plan.opts
    chunks = iter_chunks(
        b.path,
        b.layout,
        list(b.columns),
        chunk_rows=opts.chunk_rows,
        skip_bad=opts.skip_bad,
        bad=scan.result.bad,
        background=False,
    )
    writer = BlockWriter(scan.spill)
    try:
        # As the serial pass: a background thread parses and converts the next chunk.
        for chunk, data in prefetch(convert_chunk(job.plan.fmt, c) for c in chunks):
            writer.append(scan.chunk(chunk, data))
    finally:
        writer.close()
    return scan.finish()


def _note_times(ranges: dict[str, list[float]], t: np.ndarray, split: np.ndarray) -> None:
    """Widen each split's time range by the good rows of a chunk (as the serial pass)."""
    for s, name in enumerate(SPLITS):
        ts = t[split == s]
        if ts.size:
            lo, hi = ranges.get(name, [float(ts.min()), float(ts.max())])
            ranges[name] = [min(lo, float(ts.min())), max(hi, float(ts.max()))]
