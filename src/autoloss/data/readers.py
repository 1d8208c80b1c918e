"""Streaming, chunked reading of raw delimited files (and Parquet files) with pyarrow.

Every column is read as ``binary`` so that parsing never fails on content: the formats convert
columns themselves (:mod:`autoloss.data.columns`) and can then name the exact line and column of
a bad value, or skip the row. Empty fields become nulls. Compression follows the extension
(``.gz``, ``.bz2``, ``.zst``).

Parquet files (``.parquet``, ``.pq``) are read batch by batch (``ParquetFile.iter_batches``,
one row group at a time) and their columns turned into the same binary text columns, so the
formats treat both alike; a Parquet "line" is the 1-based data row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

from autoloss.errors import DataError

_COMPRESSION = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".zstd": "zstd"}
_HEAD_BYTES = 1 << 20
# pyarrow's streaming reader reads (and parses) a few dozen blocks ahead of the consumer, so
# its memory grows with the file unless blocks are small (measured: 64 MiB blocks took peak
# RSS from 1.0 to 1.9 GiB between 1M and 4M Criteo rows; 1 MiB blocks keep it flat). Parse
# 1 MiB blocks and hand out chunks of ``chunk_rows`` rows made of several of them.
_BLOCK = 1 << 20


_PARQUET = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    """Whether ``path`` is read as Parquet (by extension)."""
    return path.suffix.lower() in _PARQUET


def _parquet_file(path: Path) -> pq.ParquetFile:
    if not path.is_file():
        raise DataError("no such file", path=path)
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read Parquet ({exc})", path=path) from exc


def compression_of(path: Path) -> str | None:
    return _COMPRESSION.get(path.suffix.lower())


def open_stream(path: Path) -> pa.NativeFile:
    """A decompressed binary input stream; DataError if the file is missing."""
    if not path.is_file():
        raise DataError("no such file", path=path)
    return pa.input_stream(str(path), compression=compression_of(path))


def file_digest(path: Path, stop: threading.Event | None = None) -> dict[str, object]:
    """``{"path", "bytes", "sha256"}`` of a file as stored on disk (compressed bytes)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            if stop is not None and stop.is_set():
                break
            h.update(chunk)
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": h.hexdigest()}


class BackgroundDigests:
    """:func:`file_digest` of some files, computed in a background thread (hashlib releases the
    GIL), so that checksumming overlaps the parse instead of adding a pass at the end."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self._paths = list(dict.fromkeys(paths))
        self._results: dict[Path, dict[str, object]] = {}
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="autoloss-digest", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for p in self._paths:
                self._results[p] = file_digest(p, self._stop)
        except BaseException as exc:  # re-raised by get()
            self._error = exc

    def get(self, path: Path) -> dict[str, object]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._results[path] if path in self._results else file_digest(path)

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> BackgroundDigests:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


@dataclass(frozen=True)
class Layout:
    """How a raw file is delimited.

    Attributes:
        delimiter: one character.
        header: whether the first line names the columns.
        names: the column names of a headerless file.
        encoding: the text encoding (pyarrow transcodes to UTF-8 when not ``utf8``).
    """

    delimiter: str
    header: bool
    names: tuple[str, ...] = ()
    encoding: str = "utf8"


@dataclass
class BadRows:
    """Rows skipped with ``on_bad_row="skip"``: counts per reason and the first few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, n: int = 1, example: str | None = None) -> None:
        if n <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + n
        if example is not None and len(self.examples) < 5:
            self.examples.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, object]:
        return {"total": self.total, "reasons": dict(self.counts), "examples": list(self.examples)}


def read_head(path: Path, layout: Layout) -> tuple[list[str], int]:
    """The column names (header line or ``layout.names``) and the mean line length in bytes.

    Raises DataError for a missing or empty file.
    """
    if is_parquet(path):
        pf = _parquet_file(path)
        if pf.metadata.num_rows == 0:
            raise DataError("no data rows", path=path)
        return list(pf.schema_arrow.names), 1
    with open_stream(path) as stream:
        head = stream.read(_HEAD_BYTES)
    if not head.strip():
        raise DataError("empty file", path=path)
    lines = head.split(b"\n")
    complete = lines[:-1] if len(lines) > 1 else lines
    mean_len = max(1, sum(len(x) + 1 for x in complete) // max(1, len(complete)))
    if not layout.header:
        return list(layout.names), mean_len
    try:
        first = lines[0].decode(layout.encoding).lstrip("\ufeff").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"undecodable bytes in the header ({exc.reason})", path=path, line=1
        ) from exc
    names = next(csv.reader([first], delimiter=layout.delimiter))
    if len(lines) == 1 or not any(x.strip() for x in lines[1:]):
        raise DataError("no data rows after the header", path=path)
    return [n.strip() for n in names], mean_len


def _find_line(path: Path, text: str) -> int | None:
    """Line number of the first line whose content is ``text`` (error path only)."""
    target = text.encode("utf-8", "surrogateescape").rstrip(b"\r")
    with open_stream(path) as stream:
        for number, line in enumerate(io.BufferedReader(stream), start=1):  # type: ignore[arg-type]
            if line.rstrip(b"\r\n") == target:
                return number
    return None


@dataclass
class Chunk:
    """A table of raw rows (columns are chunked arrays); ``first_line`` is the file line of its
    first row (exact unless earlier rows were skipped for a wrong number of columns)."""

    batch: pa.Table
    first_line: int


def iter_chunks(
    path: Path,
    layout: Layout,
    columns: list[str],
    *,
    chunk_rows: int,
    skip_bad: bool,
    bad: BadRows,
    background: bool = True,
) -> Iterator[Chunk]:
    """Stream ``columns`` of ``path`` (all as binary, empty -> null) in chunks of about
    ``chunk_rows`` rows. A row with the wrong number of columns raises DataError with its line
    number, or is counted in ``bad`` and skipped. With ``background`` the next chunk is parsed
    in a background thread while the caller works on this one; without, the caller can run the
    iteration in a thread of its own (see :func:`prefetch`)."""
    if is_parquet(path):
        yield from _iter_parquet(path, columns, chunk_rows)
        return
    names, _ = read_head(path, layout)
    expected = len(names)
    offending: list[str] = []

    def on_invalid(row: pv.InvalidRow) -> str:
        reason = f"wrong number of columns (expected {expected})"
        if skip_bad:
            bad.add(reason, 1, f"line {row.number or '?'}: {row.text[:80]}")
            return "skip"
        offending.append(row.text)
        return "error"

    read_options = pv.ReadOptions(
        column_names=names,
        skip_rows=1 if layout.header else 0,
        block_size=_BLOCK,
        encoding=layout.encoding,
    )
    parse_options = pv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=on_invalid)
    convert_options = pv.ConvertOptions(
        column_types={c: pa.binary() for c in columns},
        include_columns=columns,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    line = 2 if layout.header else 1
    try:
        reader = pv.open_csv(
            open_stream(path),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
        groups = _regroup(reader, chunk_rows)
        for batch in prefetch(groups) if background else groups:
            yield Chunk(batch, line)
            line += batch.num_rows
    except pa.ArrowInvalid as exc:
        if offending:
            got = len(next(csv.reader([offending[0]], delimiter=layout.delimiter), []))
            raise DataError(
                f"wrong number of columns: expected {expected}, found {got}",
                path=path,
                line=_find_line(path, offending[0]),
            ) from exc
        raise DataError(f"cannot parse ({exc})", path=path) from exc
    except (OSError, EOFError) as exc:  # truncated or corrupt compressed stream
        raise DataError(f"cannot read ({exc})", path=path) from exc


def _iter_parquet(path: Path, columns: list[str], chunk_rows: int) -> Iterator[Chunk]:
    """Parquet batches of ``chunk_rows`` rows (memory: about one row group), columns as
    binary text like the CSV reader's: numbers and other types in their text form, empty
    strings as nulls."""
    pf = _parquet_file(path)
    line = 1
    try:
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            table = pa.Table.from_batches([batch])
            cols = [_as_binary(table.column(c)) for c in columns]
            yield Chunk(pa.Table.from_arrays(cols, names=columns), line)
            line += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read Parquet ({exc})", path=path) from exc


def _as_binary(col: pa.ChunkedArray) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_dictionary(t):
        col = pc.cast(col, t.value_type)
        t = t.value_type
    if pa.types.is_boolean(t):  # as 0/1, like a text label
        col = pc.cast(col, pa.int8())
        t = pa.int8()
    if not (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        col = pc.cast(col, pa.string())
    col = pc.cast(col, pa.binary())
    empty = pc.equal(pc.binary_length(col), 0)
    if pc.any(empty).as_py():
        col = pc.if_else(empty, pa.scalar(None, pa.binary()), col)
    return col


_DONE = object()
T = TypeVar("T")


def prefetch(items: Iterable[T]) -> Iterator[T]:
    """Produce the next item in a background thread while the caller works on this one (e.g.
    parse the next chunk while this one is encoded: pyarrow releases the GIL while parsing, so
    the two overlap on two cores). Exceptions are re-raised in the caller; a consumer that stops
    early stops the thread."""
    q: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for b in items:
                if not put(b):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # a generator (maybe a prefetch itself): stop it here
                close()

    thread = threading.Thread(target=work, name="autoloss-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()


def _regroup(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Group small parsed blocks into tables of at least ``rows`` rows. The blocks are not
    concatenated (that would copy every column): columns are chunked arrays, and the formats
    combine only what needs to be contiguous."""
    group: list[pa.RecordBatch] = []
    count = 0
    # A smaller first group, so that encoding starts while the rest is parsed (the result does
    # not depend on how the rows are grouped).
    want = max(1, rows // 8)
    for b in batches:
        if b.num_rows:
            group.append(b)
            count += b.num_rows
        if count >= want:
            yield pa.Table.from_batches(group)
            group, count, want = [], 0, rows
    if group:
        yield pa.Table.from_batches(group)
