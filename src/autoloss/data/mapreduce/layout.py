"""What every task of a map-reduce ``prepare`` shares, and the scratch files of one input.

:class:`Plan` is handed to every task: the format (bound to the inputs, side data loaded), the
pass options and the scratch directory. :class:`FileSpill` names the files the tasks of one
input hand on to each other, all under ``<scratch>/input<N>/``:

* the scan writes, chunk by chunk (one block per parse chunk, field-major like the serial
  spill files): ``x.bin`` (int32 chunk-local ids of the vocabulary fields), ``num.bin``
  (float64 raw numbers), ``y.bin``, ``bag<K>.len`` / ``bag<K>.val``, ``split.bin`` (uint8,
  when the split of a row is known while reading: pre-split inputs, ``--split temporal``) and
  ``kept.bin`` (int32 positions of the good rows of a chunk that had bad ones); and per field
  with a vocabulary, ``v<J>/``: the input's distinct values in order of first appearance
  (``distinct.arrow``), the position among them of every chunk-local id (``to_file.bin``) and
  the number of chunk-local ids of each chunk (``sizes.npy``);
* the count writes ``v<J>/counts.npy`` (training rows of each distinct value of the input) and,
  with quantile-bucketed fields, the sample writes ``sample.npz``;
* the reduce writes ``v<J>/final.bin`` (the final id of every chunk-local id).

Every task writes only its own files (or, the encode, its own rows of the final arrays), so a
task that Ray runs again after its worker died writes the same bytes again.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa

from autoloss.data.formats import FieldDef, RawFormat
from autoloss.data.parse_pass import PassOptions
from autoloss.data.spill import read_raw, write_raw
from autoloss.data.splits import split_of_rows


@dataclass(frozen=True)
class Plan:
    """What every task of one ``prepare`` shares."""

    fmt: RawFormat  # bound to every input, side data loaded
    opts: PassOptions  # without a progress callback (tasks may run in other processes)
    build: Path  # prepare's temporary dataset directory

    @property
    def root(self) -> Path:
        """The scratch directory of the tasks, removed once the arrays are written."""
        return self.build / "_mapreduce"

    @property
    def vocab_fields(self) -> list[FieldDef]:
        """Categorical fields encoded through a vocabulary (columns of the ids in ``x.bin``)."""
        return [f for f in self.fmt.fields if f.kind == "categorical" and not f.from_numbers]

    @property
    def number_fields(self) -> list[FieldDef]:
        """Fields carried as raw numbers: dense and quantile-bucketed (rows of ``num.bin``)."""
        return [f for f in self.fmt.fields if f.from_numbers]

    @property
    def bag_fields(self) -> list[FieldDef]:
        return [f for f in self.fmt.fields if f.kind == "multivalue"]

    @property
    def counted(self) -> list[FieldDef]:
        """Every field with a vocabulary, in the order of their ``v<J>`` directories."""
        return [*self.vocab_fields, *self.bag_fields]

    def spill(self, index: int) -> FileSpill:
        return FileSpill(self.root / f"input{index:05d}")


@dataclass(frozen=True)
class ChunkInfo:
    """One parse chunk of an input, as the scan left it."""

    read: int  # rows read: the row numbers of the split hash
    rows: int  # good rows kept (spilled)
    dropped: bool  # some rows were bad: the positions of the good ones are in kept.bin


@dataclass
class Block:
    """The spilled rows of one chunk (what was asked of :meth:`FileSpill.blocks`)."""

    x: np.ndarray  # int32 (vocabulary fields, rows): chunk-local ids
    nums: np.ndarray  # float64 (number fields, rows)
    y: np.ndarray
    bags: list[tuple[np.ndarray, np.ndarray]]  # per bag field: lengths, chunk-local ids
    split: np.ndarray | None  # uint8 split of each row, when the scan knew it
    kept: np.ndarray | None  # positions of the good rows among the rows read, if some were bad


class FileSpill:
    """The scratch files of one input (see the module doc)."""

    def __init__(self, root: Path) -> None:
        self.dir = root

    def reset(self) -> None:
        """An empty directory (an earlier attempt of the scan, if any, removed)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def vocab_dir(self, j: int) -> Path:
        """The directory of the vocabulary field ``j``."""
        return self.dir / f"v{j}"

    def vocab(self, j: int, name: str) -> Path:
        """A file of the vocabulary field ``j`` (``distinct.arrow``, ``to_file.bin``, ...)."""
        return self.vocab_dir(j) / name

    def chunk_offsets(self, j: int) -> np.ndarray:
        """Where each chunk's local ids start among field ``j``'s, and the total at the end."""
        sizes = np.load(self.vocab(j, "sizes.npy"))
        return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    def chunk_table(self, j: int, name: str, offsets: np.ndarray, chunk: int) -> np.ndarray:
        """The entries of chunk ``chunk`` in field ``j``'s int32 table ``name``."""
        start, stop = int(offsets[chunk]), int(offsets[chunk + 1])
        if stop == start:
            return np.zeros(0, dtype=np.int32)
        path = self.vocab(j, name)
        return np.fromfile(path, dtype=np.int32, count=stop - start, offset=4 * start)

    def read_distinct(self, j: int) -> pa.Array:
        """Field ``j``'s distinct values of this input."""
        with pa.memory_map(str(self.vocab(j, "distinct.arrow"))) as source:
            return pa.ipc.open_stream(source).read_all().column(0).combine_chunks()

    def write_distinct(self, j: int, values: pa.Array) -> None:
        batch = pa.record_batch([values], names=["v"])
        path = str(self.vocab(j, "distinct.arrow"))
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)

    def blocks(self, plan: Plan, chunks: list[ChunkInfo], parts: Sequence[str]) -> Iterator[Block]:
        """The chunks' spilled rows in order. Only the ``parts`` asked for are read (``x``,
        ``num``, ``y``, ``bags``; the others are empty); the split and the kept positions
        always are."""
        names = ["split", "kept", *(p for p in ("x", "num", "y") if p in parts)]
        files = {name: _open(self.path(f"{name}.bin")) for name in names}
        nb = len(plan.bag_fields) if "bags" in parts else 0
        bags = [
            (_open(self.path(f"bag{k}.len")), _open(self.path(f"bag{k}.val"))) for k in range(nb)
        ]
        shape = (len(plan.vocab_fields), len(plan.number_fields))
        try:
            for info in chunks:
                yield _block(files, bags, info, shape)
        finally:
            for f in [*files.values(), *(f for pair in bags for f in pair)]:
                if f is not None:
                    f.close()


def _open(path: Path) -> BinaryIO | None:
    return path.open("rb") if path.exists() else None


def _block(
    files: dict[str, BinaryIO | None],
    bag_files: list[tuple[BinaryIO | None, BinaryIO | None]],
    info: ChunkInfo,
    shape: tuple[int, int],
) -> Block:
    """The next chunk's rows from the open spill files (``shape``: vocabulary and number
    fields)."""
    n, (nv, nn) = info.rows, shape

    def part(name: str, dtype: str, fields: int | None) -> np.ndarray:
        """A part read (fields, rows), or (rows,) for ``fields`` None; empty if not asked."""
        rows = n if name in files else 0
        values = read_raw(files.get(name), dtype, rows * (1 if fields is None else fields))
        return values if fields is None else values.reshape(fields, rows)

    bags = []
    for lens, vals in bag_files:
        lengths = read_raw(lens, "int32", n).astype(np.int64)
        bags.append((lengths, read_raw(vals, "int32", int(lengths.sum()))))
    split = files["split"]
    return Block(
        x=part("x", "int32", nv),
        nums=part("num", "float64", nn),
        y=part("y", "int32", None),
        bags=bags,
        split=None if split is None else read_raw(split, "uint8", n),
        kept=read_raw(files["kept"], "int32", n) if info.dropped else None,
    )


class BlockWriter:
    """Appends the blocks of the scan to an input's spill files (held open while it reads)."""

    def __init__(self, spill: FileSpill) -> None:
        self.spill = spill
        self.files: dict[str, BinaryIO] = {}

    def _f(self, name: str) -> BinaryIO:
        if name not in self.files:
            self.files[name] = self.spill.path(name).open("wb")
        return self.files[name]

    def append(self, block: Block) -> None:
        write_raw(self._f("x.bin"), block.x, np.int32)
        write_raw(self._f("y.bin"), block.y, np.int32)
        if block.nums.shape[0]:
            write_raw(self._f("num.bin"), block.nums, np.float64)
        for k, (lengths, ids) in enumerate(block.bags):
            write_raw(self._f(f"bag{k}.len"), lengths, np.int32)
            write_raw(self._f(f"bag{k}.val"), ids, np.int32)
        if block.split is not None:
            write_raw(self._f("split.bin"), block.split, np.uint8)
        if block.kept is not None:
            write_raw(self._f("kept.bin"), block.kept, np.int32)

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def row_splits(plan: Plan, first_row: int, info: ChunkInfo, block: Block) -> np.ndarray:
    """The split of each good row of a chunk whose first row read is row ``first_row`` of the
    whole input stream: as the scan knew it, else the seeded hash of the row numbers (computed
    over every row read, bad ones included, as the serial pass does)."""
    if block.split is not None:
        return block.split
    split = split_of_rows(first_row, info.read, plan.opts.seed, plan.opts.parts)
    return split if block.kept is None else split[block.kept]


def spilled_rows(
    plan: Plan, index: int, chunks: Sequence[ChunkInfo], first_row: int, parts: Sequence[str]
) -> Iterator[tuple[Block, np.ndarray]]:
    """Each chunk's spilled rows of the ``index``-th input (whose first row is row
    ``first_row`` of the stream) and the split of each of them (:func:`row_splits`)."""
    row = first_row
    chunks = list(chunks)
    for info, block in zip(chunks, plan.spill(index).blocks(plan, chunks, parts)):
        yield block, row_splits(plan, row, info, block)
        row += info.read
