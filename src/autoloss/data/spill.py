"""Files that prepare streams to: raw per-split spill files and ``.npy`` arrays.

During the parse pass every split's rows are appended, chunk by chunk, to raw temporary files
(:class:`SplitSink`: chunk-local ids, labels, raw numbers, bags) that the finishing step streams
back block by block (:func:`read_raw`) into final ``.npy`` files written by appending rows
(:class:`NpyWriter`). Nothing here holds more than the block being written or read.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np


class SplitSink:
    """Raw, append-only files of one split: provisional ids, labels, numbers, bags.

    Ids and numbers are stored field-major per block (one block per parse chunk: ``(fields,
    rows)``), so that every per-field step reads and writes contiguous memory; the sizes of the
    blocks are kept to read them back the same way.
    """

    def __init__(self, root: Path, name: str, bag_names: list[str]) -> None:
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.rows = 0
        self.blocks: list[tuple[int, int]] = []  # (chunk, rows)
        self.label_counts = np.zeros(0, dtype=np.int64)
        self.files: dict[str, BinaryIO] = {}
        self.bag_names = bag_names
        self.max_bag = 0

    def _f(self, key: str) -> BinaryIO:
        if key not in self.files:
            self.files[key] = (self.dir / f"{key}.bin").open("wb")
        return self.files[key]

    def append(
        self,
        chunk: int,
        x: np.ndarray,
        y: np.ndarray,
        nums: np.ndarray,
        bags: dict[str, tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Append a block of chunk ``chunk``: ``x`` int32 chunk-local ids (fields, rows),
        ``nums`` float64 (fields, rows), ``bags`` name -> (lengths, chunk-local ids)."""
        self.rows += len(y)
        self.blocks.append((chunk, len(y)))
        write_raw(self._f("x"), x, np.int32)
        write_raw(self._f("y"), y, np.int32)
        counts = np.bincount(y, minlength=self.label_counts.size)
        if counts.size > self.label_counts.size:
            self.label_counts = np.pad(self.label_counts, (0, counts.size - self.label_counts.size))
        self.label_counts += counts
        if nums.shape[0]:
            write_raw(self._f("num"), nums, np.float64)
        for name, (lengths, values) in bags.items():
            write_raw(self._f(f"{name}.len"), lengths, np.int32)
            write_raw(self._f(f"{name}.val"), values, np.int32)
            if lengths.size:
                self.max_bag = max(self.max_bag, int(lengths.max()))

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def reader(self, key: str) -> BinaryIO | None:
        """The file ``key`` opened for reading from its start (None when nothing was written)."""
        path = self.dir / f"{key}.bin"
        return path.open("rb") if path.exists() else None


def write_raw(f: BinaryIO, arr: np.ndarray, dtype: type) -> None:
    """Append the bytes of ``arr`` as ``dtype`` (no copy when it already is contiguous)."""
    f.write(np.ascontiguousarray(arr, dtype=dtype).data)


def read_raw(f: BinaryIO | None, dtype: str, count: int) -> np.ndarray:
    """The next ``count`` values of ``f`` (empty for a missing file or ``count`` 0)."""
    if f is None or count == 0:
        return np.zeros(0, dtype=dtype)
    return np.fromfile(f, dtype=dtype, count=count)


class NpyWriter:
    """Writes a C-ordered ``.npy`` of known shape by appending row chunks (no memmap, so the
    written pages never count towards this process's resident memory)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: str) -> None:
        self.f = path.open("wb")
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.rows = 0
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_1_0(self.f, header)

    def write(self, arr: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(arr, dtype=self.dtype).data)
        self.rows += arr.shape[0]

    def close(self) -> None:
        self.f.close()
        assert self.rows == self.shape[0], (self.rows, self.shape)
