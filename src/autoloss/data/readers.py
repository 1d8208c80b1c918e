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
import gc
import hashlib
import io
import queue
import re
import stat
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
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
# A line longer than a block cannot be parsed ("straddling object"); the reader then retries
# with blocks twice the longest line, up to this size.
_MAX_BLOCK = 1 << 28
# The most characters of a raw value quoted in an error message.
EXCERPT = 60


_PARQUET = (".parquet", ".pq")
_EXPECTED = re.compile(r"Expected (\d+) columns, got (\d+)")


def is_parquet(path: Path) -> bool:
    """Whether ``path`` is read as Parquet (by extension)."""
    return path.suffix.lower() in _PARQUET


def excerpt(value: str | bytes | None, limit: int = EXCERPT) -> str:
    """A short, printable quotation of a raw value for an error message (``repr``: control
    characters escaped; bytes that are not UTF-8 shown as ``b'a\\xff'``), cut to ``limit``."""
    if value is None:
        return "None"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:  # shown as bytes, b'a\xff' (up to 4 characters a byte)
            cut = limit // 2
            more = f"... ({len(value):,} bytes)" if len(value) > cut else ""
            return repr(value[:cut]) + more
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value):,} characters)"
    return repr(value)


def printable(name: str, limit: int = 40) -> str:
    """A column name for a message: itself when short and printable, else an escaped excerpt."""
    return name if name.isprintable() and len(name) <= limit else excerpt(name, limit)


def one_line(text: object, limit: int = 200) -> str:
    """A library's message as one printable line (no newlines, no raw bytes), cut to ``limit``."""
    flat = " ".join(str(text).split())
    flat = flat.encode("ascii", "backslashreplace").decode("ascii")
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _os_reason(exc: OSError) -> str:
    return one_line(exc.strerror or exc).lower()


def check_file(path: Path) -> None:
    """DataError unless ``path`` is a regular file: missing, a directory, something else."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataError("no such file", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read ({_os_reason(exc)})", path=path) from None
    if stat.S_ISDIR(mode):
        raise DataError("is a directory, not a file", path=path)
    if not stat.S_ISREG(mode):
        raise DataError(
            "not a regular file (a pipe or device cannot be read more than once)", path=path
        )


def _parquet_file(path: Path) -> pq.ParquetFile:
    check_file(path)
    try:
        return pq.ParquetFile(str(path))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"cannot read Parquet ({one_line(exc)})", path=path) from None


def compression_of(path: Path) -> str | None:
    return _COMPRESSION.get(path.suffix.lower())


def open_stream(path: Path) -> pa.NativeFile:
    """A decompressed binary input stream; DataError if the file is missing or unreadable."""
    check_file(path)
    try:
        return pa.input_stream(str(path), compression=compression_of(path))
    except OSError as exc:
        raise DataError(f"cannot open ({_os_reason(exc)})", path=path) from None


def read_error(path: Path, exc: BaseException) -> DataError:
    """The DataError of a failed read: a truncated or mislabelled compressed file, I/O."""
    codec = compression_of(path)
    if codec is not None:
        return DataError(
            f"cannot decompress ({one_line(exc)}): the file is truncated or not "
            f"{codec}-compressed as its extension says",
            path=path,
        )
    if isinstance(exc, OSError) and exc.strerror:
        return DataError(f"cannot read ({_os_reason(exc)})", path=path)
    return DataError(f"cannot read ({one_line(exc)})", path=path)


def read_prefix(path: Path, size: int) -> bytes:
    """The first ``size`` decompressed bytes of ``path`` (DataError when unreadable)."""
    with open_stream(path) as stream:
        try:
            return bytes(stream.read(size))
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise read_error(path, exc) from None


def file_digest(path: Path, stop: threading.Event | None = None) -> dict[str, object]:
    """``{"path", "bytes", "sha256"}`` of a file as stored on disk (compressed bytes)."""
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                if stop is not None and stop.is_set():
                    break
                h.update(chunk)
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"cannot read ({_os_reason(exc)})", path=path) from None
    return {"path": str(path.resolve()), "bytes": size, "sha256": h.hexdigest()}


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
        columns_text: how messages say the expected number of columns (default: the number).
    """

    delimiter: str
    header: bool
    names: tuple[str, ...] = ()
    encoding: str = "utf8"
    columns_text: str = ""  # the expected number of columns, in messages (default: len(names))


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

    Raises DataError for a missing, unreadable or empty file.
    """
    if is_parquet(path):
        pf = _parquet_file(path)
        if pf.metadata.num_rows == 0:
            raise DataError("no data rows", path=path)
        return list(pf.schema_arrow.names), 1
    head = read_prefix(path, _HEAD_BYTES)
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
            f"undecodable bytes in the header ({exc.reason}): {excerpt(lines[0])}",
            path=path,
            line=1,
        ) from None
    try:
        names = next(csv.reader([first], delimiter=layout.delimiter), [])
    except csv.Error as exc:
        raise DataError(f"cannot parse the header ({one_line(exc)})", path=path, line=1) from None
    if len(lines) == 1 or not any(x.strip() for x in lines[1:]):
        raise DataError("no data rows after the header", path=path)
    return [n.strip() for n in names], mean_len


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Every line of ``path`` (number, bytes without the line end); error paths only."""
    with open_stream(path) as stream:
        try:
            for number, line in enumerate(io.BufferedReader(stream), start=1):  # type: ignore[arg-type]
                yield number, line.rstrip(b"\r\n")
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise read_error(path, exc) from None


def _invalid_columns(line: bytes, layout: Layout, names: list[str]) -> int | None:
    """The number of columns pyarrow finds in ``line`` when it is not ``len(names)``."""
    try:
        pv.read_csv(
            pa.py_buffer(line + b"\n"),
            read_options=pv.ReadOptions(column_names=names, encoding=layout.encoding),
            parse_options=pv.ParseOptions(delimiter=layout.delimiter),
            convert_options=pv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary())),
        )
    except pa.ArrowInvalid as exc:
        match = _EXPECTED.search(str(exc))
        return int(match.group(2)) if match else None
    return None


def _find_invalid_row(path: Path, layout: Layout, names: list[str], text: str) -> int | None:
    """The line of the first row with a wrong number of columns that starts like ``text``
    (pyarrow quotes the row that stopped it, cut to 96 bytes, undecodable bytes replaced); an
    error path only: one pass over the lines up to it."""
    parts = re.split(r"[\r\n]", text, maxsplit=1)
    spans = len(parts) > 1  # an unclosed quote: the row runs over lines, its first line is whole
    first = parts[0] if spans else parts[0].removesuffix(" ...").rstrip("\ufffd")  # cut
    for number, line in _lines(path):
        if layout.header and number == 1:
            continue
        for row in line.split(b"\r"):  # pyarrow also ends a row at a lone CR
            if not row:
                continue
            decoded = row.decode(layout.encoding, "replace")
            if spans and decoded == first:
                return number
            if decoded.startswith(first) and _invalid_columns(row, layout, names) is not None:
                return number
    return None


def _longest_line(path: Path) -> tuple[int, int]:
    """(number, length in bytes) of the longest line of ``path`` (a vectorised scan)."""
    best_line, best_len, line, current = 1, 0, 1, 0
    with open_stream(path) as stream:
        while True:
            try:
                piece = stream.read(1 << 24)
            except (OSError, EOFError, pa.ArrowException) as exc:
                raise read_error(path, exc) from None
            if not piece:
                break
            newlines = np.flatnonzero(np.frombuffer(piece, np.uint8) == 10)
            if newlines.size == 0:
                current += len(piece)
                continue
            lengths = np.diff(newlines, prepend=-1) - 1
            lengths[0] += current
            i = int(np.argmax(lengths))
            if lengths[i] > best_len:
                best_line, best_len = line + i, int(lengths[i])
            line += int(newlines.size)
            current = len(piece) - int(newlines[-1]) - 1
    if current > best_len:
        best_line, best_len = line, current
    return best_line, best_len


def _bigger_block(path: Path, block: int) -> int:
    """A block size that holds the longest line of ``path`` twice over (more than ``block``);
    DataError naming the line when that is over the largest block the reader takes."""
    number, length = _longest_line(path)
    need = max(2 * block, 1 << (2 * length).bit_length())
    if need > _MAX_BLOCK:
        raise DataError(
            f"line is {length:,} bytes long, more than the CSV reader's largest block "
            f"({_MAX_BLOCK >> 20} MiB): split or remove that line",
            path=path,
            line=number,
        )
    return need


class _InvalidRows:
    """pyarrow's ``invalid_row_handler`` with ``--on-bad-row skip``: skip a row with the wrong
    number of columns, counted in ``bad``. (Without skip there is no handler: pyarrow stops at
    the row and the error is raised from its message.)

    It never raises: pyarrow prints (``Exception ignored in ...``) rather than propagates an
    exception from a handler. pyarrow also fails *before* calling the handler when the row is
    not UTF-8; :func:`_quiet_invalid_rows` keeps that from being printed, and records it in
    ``failures`` (pyarrow then stops at the row, as without a handler).
    """

    def __init__(self, expected: str, bad: BadRows, counted: int) -> None:
        self.reason = f"wrong number of columns (expected {expected})"
        self.bad = bad
        self.counted = counted  # rows an earlier attempt of the same read counted in ``bad``
        self.seen = 0
        self.failures: list[BaseException] = []

    def __call__(self, row: pv.InvalidRow) -> str:
        try:
            self.seen += 1
            if self.seen > self.counted:
                self.bad.add(self.reason, 1, f"line {row.number or '?'}: {excerpt(row.text)}")
        except Exception as exc:  # never raise into pyarrow (it would print a traceback)
            self.failures.append(exc)
        return "skip"


def _wait_released(handler: weakref.ref[_InvalidRows], seconds: float = 2.0) -> None:
    """Wait until pyarrow has let go of a finished read's handler. pyarrow drops the reader
    (and its reference to the Python handler) on one of its own threads, shortly after the
    Python reader object goes; if the interpreter is already shutting down by then, that
    thread cannot take the GIL and the process aborts ("terminate called without an active
    exception"): so a read does not return, or raise, before that has happened."""
    deadline = time.monotonic() + seconds
    while handler() is not None and time.monotonic() < deadline:
        gc.collect(0)
        time.sleep(0.001)


class _UnraisableFilter:
    """While some read is active, ``sys.unraisablehook`` drops (records on the handler) the
    exceptions pyarrow reports for an :class:`_InvalidRows` handler; others pass through."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved: Any = None

    def hook(self, unraisable: Any) -> None:
        handler = getattr(unraisable, "object", None)
        if isinstance(handler, _InvalidRows):
            handler.failures.append(unraisable.exc_value)
            return
        (self.saved or sys.__unraisablehook__)(unraisable)

    @contextmanager
    def active(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.saved = sys.unraisablehook
                sys.unraisablehook = self.hook
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0:
                    if sys.unraisablehook == self.hook:
                        sys.unraisablehook = self.saved
                    self.saved = None


_quiet_invalid_rows = _UnraisableFilter().active


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
    iteration in a thread of its own (see :func:`prefetch`).

    A line longer than the reader's block makes pyarrow fail ("straddling object"): the read
    then starts again with blocks that hold the longest line, skipping the rows already handed
    out (up to ``_MAX_BLOCK``; a longer line is a DataError naming it)."""
    if is_parquet(path):
        yield from _iter_parquet(path, columns, chunk_rows)
        return
    names, _ = read_head(path, layout)
    expected = layout.columns_text or str(len(names))
    first_line = 2 if layout.header else 1
    block, done, counted = _BLOCK, 0, 0
    while True:
        handler = _InvalidRows(expected, bad, counted) if skip_bad else None
        error: DataError | None = None
        retry = False
        with _quiet_invalid_rows():  # until pyarrow lets go of the handler (see below)
            try:
                with open_stream(path) as stream:
                    reader = _open_csv(stream, layout, names, columns, block, handler)
                    groups = _regroup(_drop_rows(reader, done), chunk_rows)
                    for batch in prefetch(groups) if background else groups:
                        yield Chunk(batch, first_line + done)
                        done += batch.num_rows
            except pa.ArrowInvalid as exc:
                if "straddl" in str(exc) and not (handler and handler.failures):
                    retry = True
                else:
                    error = _parse_error(path, layout, names, expected, str(exc), skip_bad)
            except (OSError, EOFError) as exc:  # truncated or corrupt compressed stream, I/O
                error = read_error(path, exc)
            except pa.ArrowException as exc:
                error = DataError(f"cannot parse ({one_line(exc)})", path=path)
            finally:
                reader = groups = None  # type: ignore[assignment]
                if handler is not None:
                    counted = max(counted, handler.seen)
                    released = weakref.ref(handler)
                    handler = None
                    _wait_released(released)
        # Raised here, outside the except blocks, so that no traceback keeps the reader alive.
        if error is not None:
            raise error
        if not retry:
            return
        block = _bigger_block(path, block)


def _open_csv(
    stream: pa.NativeFile,
    layout: Layout,
    names: list[str],
    columns: list[str],
    block: int,
    handler: _InvalidRows | None,
) -> pv.CSVStreamingReader:
    read_options = pv.ReadOptions(
        column_names=names,
        skip_rows=1 if layout.header else 0,
        block_size=block,
        encoding=layout.encoding,
    )
    parse_options = pv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=handler)
    convert_options = pv.ConvertOptions(
        column_types={c: pa.binary() for c in columns},
        include_columns=columns,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        null_values=[""],
    )
    return pv.open_csv(
        stream,
        read_options=read_options,
        parse_options=parse_options,
        convert_options=convert_options,
    )


def _drop_rows(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """``batches`` without their first ``rows`` rows (those handed out by an earlier try)."""
    for b in batches:
        if rows >= b.num_rows:
            rows -= b.num_rows
            continue
        if rows:
            b, rows = b.slice(rows), 0
        yield b


def _parse_error(
    path: Path, layout: Layout, names: list[str], expected: str, message: str, skip_bad: bool
) -> DataError:
    """The DataError of a failed parse: the row with the wrong number of columns, by line."""
    match = re.search(r"Expected (\d+) columns, got (\d+): (.*)\Z", message, re.DOTALL)
    if match is None:
        return DataError(f"cannot parse ({one_line(message)})", path=path)
    text = match.group(3)
    undecodable = "\ufffd" in text.rstrip("\ufffd").removesuffix(" ...").rstrip("\ufffd")
    return DataError(
        f"wrong number of columns: expected {expected}, found {match.group(2)}"
        + (
            " (a quote opened on this line is not closed on it)"
            if re.search("[\r\n]", text)
            else ""
        )
        + (", in a row that is not UTF-8" if undecodable else "")
        + (" (--on-bad-row skip cannot skip such a row)" if undecodable and skip_bad else ""),
        path=path,
        line=_find_invalid_row(path, layout, names, text),
    )


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
        raise DataError(f"cannot read Parquet ({one_line(exc)})", path=path) from None


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
