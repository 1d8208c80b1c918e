"""The single streaming parse pass of prepare, over every input, chunk by chunk.

On two threads (a background thread parses and converts the next chunk while this one is
encoded):

1. the format converts the chunk's columns (vectorised) and reports bad rows, which raise a
   DataError naming file and line or are dropped and counted;
2. each row gets its split (pre-split files: their split; one file: a seeded hash of the row
   number, :func:`~autoloss.data.splits.split_of_rows`, or with ``--split temporal`` its time
   against the cut points, :class:`~autoloss.data.splits.TimeCuts`; so the assignment does not
   depend on chunk sizes);
3. each categorical field is dictionary-encoded within the chunk (chunk-local ids; the fields
   of a chunk side by side on a pool of threads), its dictionary and training counts spilled to
   disk (:mod:`autoloss.data.vocab`); raw-number fields gather training statistics
   (:class:`NumberStats`); local ids, labels, raw numbers and bags are appended to the split's
   spill files (:class:`~autoloss.data.spill.SplitSink`).

What the pass leaves (:class:`ParsePass`) is turned into the final arrays by
:mod:`autoloss.data.finalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from autoloss.data.columns import first_bad_row
from autoloss.data.formats import BoundInput, ChunkData, RawFormat
from autoloss.data.parallel import FieldPool
from autoloss.data.readers import BadRows, Chunk, excerpt, iter_chunks, prefetch, printable
from autoloss.data.spill import SplitSink
from autoloss.data.splits import TimeCuts, split_of_rows
from autoloss.data.store import SPLITS
from autoloss.data.vocab import FieldVocab
from autoloss.errors import DataError

# Rows kept to estimate quantile edges (a uniform sample of the training values of the field).
QUANTILE_SAMPLE = 200_000

Bags = dict[str, tuple[np.ndarray, np.ndarray]]  # field -> (lengths, chunk-local ids)


@dataclass(frozen=True)
class PassInput:
    """One input file of the pass, bound to the format."""

    bound: BoundInput
    split: int | None  # the split of all its rows (pre-split files); None: hashed per row


@dataclass(frozen=True)
class PassOptions:
    """How the pass reads and splits (see :func:`autoloss.data.prepare.prepare`)."""

    parts: tuple[float, float, float]  # train:valid:test of hashed rows
    seed: int  # of the split hash and of the quantile sample
    skip_bad: bool  # drop and count bad rows instead of raising
    chunk_rows: int
    progress: Callable[[int], None] | None = None  # called with the rows read so far
    cuts: TimeCuts | None = None  # --split temporal: rows split by their time


@dataclass
class NumberStats:
    """Training statistics of a raw-number field: moments (dense) or a sample (quantiles)."""

    total: float = 0.0
    total_sq: float = 0.0
    count: int = 0
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0))
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, v: np.ndarray, rng: np.random.Generator | None) -> None:
        v = v[~np.isnan(v)]
        self.total += float(v.sum())
        self.total_sq += float(np.square(v).sum())
        self.count += int(v.size)
        if rng is not None and v.size:
            # Bottom-k sampling by random keys: a uniform sample of all training values.
            keys = np.concatenate([self.keys, rng.random(v.size)])
            vals = np.concatenate([self.sample, v])
            if keys.size > QUANTILE_SAMPLE:
                keep = np.argpartition(keys, QUANTILE_SAMPLE)[:QUANTILE_SAMPLE]
                keys, vals = keys[keep], vals[keep]
            self.keys, self.sample = keys, vals


def convert_chunk(fmt: RawFormat, chunk: Chunk) -> tuple[Chunk | None, ChunkData]:
    """Convert a chunk; the raw chunk is handed on only when a row is bad (to quote the value
    in the error), so that a converted chunk waiting in the pipeline keeps alive only what its
    converted columns still use."""
    data = fmt.transform(chunk.batch, has_label=True)
    bad = any(p.mask.any() for p in data.problems)
    return (chunk if bad else None), data


class ParsePass:
    """The parse pass and what it leaves: chunk vocabularies, number statistics, spill files.

    ``root`` is a scratch directory (spill files and chunk dictionaries) that the caller
    removes once the final arrays are written.
    """

    def __init__(
        self,
        fmt: RawFormat,
        root: Path,
        opts: PassOptions,
        pool: FieldPool,
        bad: BadRows | None = None,
    ) -> None:
        self.fmt = fmt
        self.opts = opts
        self.pool = pool
        self.bad = BadRows() if bad is None else bad
        self.vocab_fields = [
            f for f in fmt.fields if f.kind == "categorical" and not f.from_numbers
        ]
        self.number_fields = [f for f in fmt.fields if f.from_numbers]
        self.bag_fields = [f for f in fmt.fields if f.kind == "multivalue"]
        self.vocabs = {
            f.name: FieldVocab(root / "vocab" / f"f{j}")
            for j, f in enumerate((*self.vocab_fields, *self.bag_fields))
        }
        self.chunk = 0  # index of the next chunk: the vocabularies number chunks the same way
        self.row = 0  # rows read from the inputs, the key of the split hash
        self.stats = {f.name: NumberStats() for f in self.number_fields}
        self.rng = np.random.default_rng(opts.seed)
        names = [f.name for f in self.bag_fields]
        self.sinks = [SplitSink(root, s, names) for s in SPLITS]
        self.time_range: dict[str, list[float]] = {}  # split -> [first, last] time (temporal)

    def run(self, inputs: Sequence[PassInput]) -> dict[str, int]:
        """Read every input (side data first); the number of rows of each split."""
        self.fmt.load_side_data(self.opts.skip_bad, self.bad)
        for inp in inputs:
            self._read(inp)
        return self._close(inputs[0].bound.path)

    def _read(self, inp: PassInput) -> None:
        b = inp.bound
        chunks = iter_chunks(
            b.path,
            b.layout,
            list(b.columns),
            chunk_rows=self.opts.chunk_rows,
            skip_bad=self.opts.skip_bad,
            bad=self.bad,
            background=False,
        )
        # Two stages on two threads: a background thread parses and converts the next chunk
        # while this one is encoded (here and by the field pool).
        for chunk, data in prefetch(convert_chunk(self.fmt, c) for c in chunks):
            split = self._split_of(data, inp.split)
            self.row += data.n
            checked = self.check(data, chunk, b.path)
            if checked is not data:
                split = split[~np.logical_or.reduce([q.mask for q in data.problems])]
            if self.opts.cuts is not None:
                self._note_times(checked.time, split)
            self.feed(checked, split)
            if self.opts.progress is not None:
                self.opts.progress(self.row)

    def _split_of(self, data: ChunkData, fixed: int | None) -> np.ndarray:
        """The splits of the next rows read (``data``: their chunk)."""
        if fixed is not None:
            return np.full(data.n, fixed, dtype=np.uint8)
        if self.opts.cuts is not None:
            assert data.time is not None
            return self.opts.cuts.of_times(data.time)
        return split_of_rows(self.row, data.n, self.opts.seed, self.opts.parts)

    def _note_times(self, t: np.ndarray | None, split: np.ndarray) -> None:
        """Widen each split's time range by the (good) rows of a chunk."""
        assert t is not None
        for s, name in enumerate(SPLITS):
            ts = t[split == s]
            if ts.size:
                lo, hi = self.time_range.get(name, [float(ts.min()), float(ts.max())])
                self.time_range[name] = [min(lo, float(ts.min())), max(hi, float(ts.max()))]

    def _close(self, first_path: Path) -> dict[str, int]:
        for sink in self.sinks:
            sink.close()
        counts = {name: sink.rows for name, sink in zip(SPLITS, self.sinks)}
        if sum(counts.values()) == 0:
            raise DataError("no usable data rows", path=first_path)
        if counts["train"] == 0:
            raise DataError("no training rows (check --split or the input)", path=first_path)
        return counts

    # --- bad rows ------------------------------------------------------------------------------
    def check(self, data: ChunkData, chunk: Chunk | None, path: Path) -> ChunkData:
        """Raise on the first bad row, or drop bad rows and count them (``chunk``: the raw
        rows, None when no row is bad)."""
        if chunk is None:
            return data
        return data.select(~bad_rows(data, chunk, path, self.opts.skip_bad, self.bad))

    # --- encoding a chunk ----------------------------------------------------------------------
    def feed(self, data: ChunkData, split: np.ndarray) -> None:
        """Encode the (good) rows of a chunk and append them to their splits' spill files."""
        train = split == 0
        prov = self._local_ids(data, train)
        nums = self._numbers(data, train)
        bags = self._bag_ids(data, train)
        assert data.y is not None
        self._append(split, prov, data.y, nums, bags)
        self.chunk += 1

    def _local_ids(self, data: ChunkData, train: np.ndarray) -> np.ndarray:
        """Chunk-local ids of the vocabulary fields, (fields, rows)."""
        prov = np.empty((len(self.vocab_fields), data.n), dtype=np.int32)

        def field_ids(j: int) -> None:
            f = self.vocab_fields[j]
            prov[j] = self.vocabs[f.name].local_ids(data.tokens[f.name], train)

        # Fields are independent (one vocabulary each) and the heavy steps (hashing, gathers,
        # counts) release the GIL, so the fields of a chunk are encoded by a pool of threads.
        self.pool.run(field_ids, len(self.vocab_fields))
        return prov

    def _numbers(self, data: ChunkData, train: np.ndarray) -> np.ndarray:
        """Raw numbers of the number fields, (fields, rows); their training statistics."""
        nums = np.empty((len(self.number_fields), data.n), dtype=np.float64)
        for j, f in enumerate(self.number_fields):
            v = data.numbers[f.name]
            nums[j] = v
            self.stats[f.name].add(v[train], self.rng if f.quantiles is not None else None)
        return nums

    def _bag_ids(self, data: ChunkData, train: np.ndarray) -> Bags:
        """Bag lengths and chunk-local ids of the multi-valued fields."""
        bags: Bags = {}
        for f in self.bag_fields:
            lists = data.bags[f.name]
            lengths = np.asarray(
                pc.list_value_length(lists).fill_null(0).to_numpy(), dtype=np.int64
            )
            flat = pc.list_flatten(lists)
            ids = self.vocabs[f.name].local_ids(flat, np.repeat(train, lengths))
            bags[f.name] = (lengths, ids)
        return bags

    def _append(
        self, split: np.ndarray, prov: np.ndarray, y: np.ndarray, nums: np.ndarray, bags: Bags
    ) -> None:
        """Append each split's rows of the chunk to its sink."""
        present = np.bincount(split, minlength=len(self.sinks))
        for s, sink in enumerate(self.sinks):
            if not present[s]:
                continue
            if present[s] == len(split):  # the whole chunk (pre-split files): no copies
                sink.append(self.chunk, prov, y, nums, bags)
                continue
            rows = np.flatnonzero(split == s)
            sub_bags = {
                name: (lengths[rows], ids[np.repeat(split == s, lengths)])
                for name, (lengths, ids) in bags.items()
            }
            sink.append(
                self.chunk, prov.take(rows, axis=1), y[rows], nums.take(rows, axis=1), sub_bags
            )


def bad_rows(data: ChunkData, chunk: Chunk, path: Path, skip: bool, bad: BadRows) -> np.ndarray:
    """The mask of the bad rows of a converted chunk, counted in ``bad`` (by reason, with the
    first line numbers); without ``skip`` the DataError of the first one is raised instead."""
    if not skip:
        raise _first_bad_row_error(data, chunk, path)
    counted = np.zeros(data.n, dtype=bool)
    for p in data.problems:
        new = p.mask & ~counted
        if new.any():
            bad.add(p.reason, int(new.sum()), f"line {chunk.first_line + int(np.argmax(new))}")
            counted |= new
    return counted


def _first_bad_row_error(data: ChunkData, chunk: Chunk, path: Path) -> DataError:
    """The DataError of the first bad row of a chunk, quoting its raw value."""
    hit = first_bad_row(data.problems)
    assert hit is not None
    idx, problem = hit
    raw = chunk.batch.column(problem.column)[idx].as_py()
    return DataError(
        f"{problem.reason}: {excerpt(raw)}" if raw is not None else problem.reason,
        path=path,
        line=chunk.first_line + idx,
        column=printable(problem.column),
    )
