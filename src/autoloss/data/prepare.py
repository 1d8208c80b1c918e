"""Streaming preparation of raw files into an encoded dataset directory.

One parse pass over the input, chunk by chunk, on two threads (a background thread parses and
converts the next chunk while this one is encoded):

1. the format converts the chunk's columns (vectorised) and reports bad rows;
2. each row gets its split (pre-split files: their split; one file: a seeded hash of the row
   number, so the assignment does not depend on chunk sizes);
3. each categorical field is dictionary-encoded within the chunk (chunk-local ids; the fields
   of a chunk side by side on a pool of threads), its dictionary and training counts spilled to
   disk (:mod:`autoloss.data.vocab`); local ids, labels, raw numbers and bags are appended to
   raw per-split temporary files.

Then each field's vocabulary is built once from its spilled chunk dictionaries (min-count,
frequency order, OOV = 0), and each split's temporary files are streamed once more, chunk by
chunk, through one lookup per field (that chunk's local -> final table) into the final ``.npy``
files. Memory is a few chunks in flight, whatever the number of rows, plus one field's
dictionaries at a time at the end. Everything is written into a temporary directory beside the
target, renamed at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from autoloss import __version__
from autoloss.data.columns import first_bad_row
from autoloss.data.formats import ChunkData, FieldDef, MovieLensFormat, RawFormat, make_format
from autoloss.data.parallel import FieldPool
from autoloss.data.readers import (
    BackgroundDigests,
    BadRows,
    Chunk,
    iter_chunks,
    prefetch,
    read_head,
)
from autoloss.data.store import FORMAT_VERSION, SPLITS
from autoloss.data.vocab import FieldVocab, FinalVocab
from autoloss.errors import ConfigError, DataError

DEFAULT_CHUNK_ROWS = 262_144
DEFAULT_SEED = 2021
DEFAULT_SPLIT = (8.0, 1.0, 1.0)
# Rows kept to estimate quantile edges (a uniform sample of the training values of the field).
QUANTILE_SAMPLE = 200_000


@dataclass
class PrepareResult:
    """What ``prepare`` did."""

    path: Path
    splits: dict[str, int]
    vocab_sizes: dict[str, int]
    seconds: float
    bad_rows: dict[str, Any]
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


# --- options ---------------------------------------------------------------------------------
def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"8:1:1"`` -> (8, 1, 1); ConfigError unless three non-negative parts with train > 0."""
    try:
        parts = [float(p) for p in (text.split(":") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(f"--split must look like 8:1:1, got {text!r}", column="--split") from exc
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0:
        raise ConfigError(
            f"--split needs three non-negative parts with train > 0, got {text!r}",
            column="--split",
        )
    return parts[0], parts[1], parts[2]


def split_of_rows(start: int, n: int, seed: int, parts: tuple[float, float, float]) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of rows ``start .. start+n-1``.

    A splitmix64 hash of (seed, row number) gives each row a uniform number in [0, 1), compared
    with the cumulative fractions: deterministic for a seed and file, independent of chunking.
    """
    mask = (1 << 64) - 1
    s = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask
    z = np.arange(start, start + n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = z + np.uint64(s)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    cum = np.cumsum(parts) / sum(parts)
    return np.minimum(np.searchsorted(cum[:2], u, side="right"), 2).astype(np.uint8)


# --- per-split temporary storage -------------------------------------------------------------
class _SplitSink:
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
        self, chunk: int, x: np.ndarray, y: np.ndarray, nums: np.ndarray, bags: dict
    ) -> None:  # type: ignore[type-arg]
        """Append a block of chunk ``chunk``: ``x`` int32 chunk-local ids (fields, rows),
        ``nums`` float64 (fields, rows)."""
        self.rows += len(y)
        self.blocks.append((chunk, len(y)))
        _write(self._f("x"), x, np.int32)
        _write(self._f("y"), y, np.int32)
        counts = np.bincount(y, minlength=self.label_counts.size)
        if counts.size > self.label_counts.size:
            self.label_counts = np.pad(self.label_counts, (0, counts.size - self.label_counts.size))
        self.label_counts += counts
        if nums.shape[0]:
            _write(self._f("num"), nums, np.float64)
        for name, (lengths, values) in bags.items():
            _write(self._f(f"{name}.len"), lengths, np.int32)
            _write(self._f(f"{name}.val"), values, np.int32)
            if lengths.size:
                self.max_bag = max(self.max_bag, int(lengths.max()))

    def close(self) -> None:
        for f in self.files.values():
            f.close()

    def reader(self, key: str, dtype: str) -> BinaryIO | None:
        path = self.dir / f"{key}.bin"
        return path.open("rb") if path.exists() else None


def _write(f: BinaryIO, arr: np.ndarray, dtype: type) -> None:
    """Append the bytes of ``arr`` as ``dtype`` (no copy when it already is contiguous)."""
    f.write(np.ascontiguousarray(arr, dtype=dtype).data)


def _read(f: BinaryIO | None, dtype: str, count: int) -> np.ndarray:
    if f is None or count == 0:
        return np.zeros(0, dtype=dtype)
    return np.fromfile(f, dtype=dtype, count=count)


class _NpyWriter:
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


# --- the pass --------------------------------------------------------------------------------
@dataclass
class _NumberStats:
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


class _Pass:
    """State of the single parse pass."""

    def __init__(
        self, fmt: RawFormat, root: Path, seed: int, skip_bad: bool, pool: FieldPool
    ) -> None:
        self.fmt = fmt
        self.pool = pool
        self.seed = seed
        self.skip_bad = skip_bad
        self.bad = BadRows()
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
        self.stats = {f.name: _NumberStats() for f in self.number_fields}
        self.rng = np.random.default_rng(seed)
        names = [f.name for f in self.bag_fields]
        self.sinks = [_SplitSink(root, s, names) for s in SPLITS]

    def check(self, data: ChunkData, chunk: Chunk | None, path: Path) -> ChunkData:
        """Raise on the first bad row, or drop bad rows and count them (``chunk``: the raw
        rows, None when no row is bad)."""
        if chunk is None:
            return data
        chunk_batch, first_line = chunk.batch, chunk.first_line
        if not self.skip_bad:
            hit = first_bad_row(data.problems)
            assert hit is not None
            idx, problem = hit
            raw = chunk_batch.column(problem.column)[idx].as_py()
            shown = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
            raise DataError(
                f"{problem.reason}: {shown!r}" if shown is not None else problem.reason,
                path=path,
                line=first_line + idx,
                column=problem.column,
            )
        counted = np.zeros(data.n, dtype=bool)
        for p in data.problems:
            new = p.mask & ~counted
            if new.any():
                self.bad.add(p.reason, int(new.sum()), f"line {first_line + int(np.argmax(new))}")
                counted |= new
        return data.select(~counted)

    def feed(self, data: ChunkData, split: np.ndarray) -> None:
        train = split == 0
        n = data.n
        prov = np.empty((len(self.vocab_fields), n), dtype=np.int32)

        def field_ids(j: int) -> None:
            f = self.vocab_fields[j]
            prov[j] = self.vocabs[f.name].local_ids(data.tokens[f.name], train)

        # Fields are independent (one vocabulary each) and the heavy steps (hashing, gathers,
        # counts) release the GIL, so the fields of a chunk are encoded by a pool of threads.
        self.pool.run(field_ids, len(self.vocab_fields))
        nums = np.empty((len(self.number_fields), n), dtype=np.float64)
        for j, f in enumerate(self.number_fields):
            v = data.numbers[f.name]
            nums[j] = v
            self.stats[f.name].add(v[train], self.rng if f.quantiles is not None else None)
        bags: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for f in self.bag_fields:
            lists = data.bags[f.name]
            lengths = np.asarray(
                pc.list_value_length(lists).fill_null(0).to_numpy(), dtype=np.int64
            )
            flat = pc.list_flatten(lists)
            ids = self.vocabs[f.name].local_ids(flat, np.repeat(train, lengths))
            bags[f.name] = (lengths, ids)
        assert data.y is not None
        present = np.bincount(split, minlength=len(self.sinks))
        for s, sink in enumerate(self.sinks):
            if not present[s]:
                continue
            if present[s] == n:  # the whole chunk (pre-split files): no copies
                sink.append(self.chunk, prov, data.y, nums, bags)
                continue
            rows = np.flatnonzero(split == s)
            sub_bags = {}
            for name, (lengths, ids) in bags.items():
                sub_bags[name] = (lengths[rows], ids[np.repeat(split == s, lengths)])
            sink.append(
                self.chunk, prov.take(rows, axis=1), data.y[rows], nums.take(rows, axis=1), sub_bags
            )
        self.chunk += 1


# --- finishing -------------------------------------------------------------------------------
def _quantile_edges(stats: _NumberStats, n: int) -> np.ndarray:
    if stats.sample.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(stats.sample, np.linspace(0, 1, n + 1)[1:-1]))


def quantile_ids(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Quantile bucket ids: bucket b -> b + 1, missing -> len(edges) + 2 (id 0 unused)."""
    ids = np.searchsorted(edges, v, side="right").astype(np.int32) + 1
    ids[np.isnan(v)] = edges.size + 2
    return ids


def _write_split(
    sink: _SplitSink,
    out: Path,
    p: _Pass,
    finals: dict[str, FinalVocab],
    edges: dict[str, np.ndarray],
    moments: dict[str, tuple[float, float]],
    max_bag: int,
    chunk_rows: int,
) -> None:
    fmt = p.fmt
    d = out / sink.dir.name
    d.mkdir()
    n = sink.rows
    cat_fields = [f for f in fmt.fields if f.kind == "categorical"]
    dense_fields = [f for f in fmt.fields if f.kind == "dense"]
    vocab_col = {f.name: j for j, f in enumerate(p.vocab_fields)}
    num_col = {f.name: j for j, f in enumerate(p.number_fields)}
    fx = _NpyWriter(d / "x.npy", (n, len(cat_fields)), "int32")
    fy = _NpyWriter(d / "y.npy", (n,), "int32")
    fd = _NpyWriter(d / "dense.npy", (n, len(dense_fields)), "float32") if dense_fields else None
    fb = (
        _NpyWriter(d / "bags.npy", (n, len(p.bag_fields), max_bag), "int32")
        if p.bag_fields
        else None
    )
    rx, ry, rn = sink.reader("x", "int32"), sink.reader("y", "int32"), sink.reader("num", "f8")
    rbags = {
        f.name: (sink.reader(f"{f.name}.len", "i4"), sink.reader(f"{f.name}.val", "i4"))
        for f in p.bag_fields
    }
    nv, nn = len(p.vocab_fields), len(p.number_fields)
    for chunk, k in sink.blocks:
        prov = _read(rx, "int32", k * nv).reshape(nv, k)
        nums = _read(rn, "float64", k * nn).reshape(nn, k)
        # Field-major work on contiguous rows, one transpose into the row-major output.
        x = np.empty((len(cat_fields), k), dtype=np.int32)

        def final_ids(
            j: int,
            x: np.ndarray = x,
            prov: np.ndarray = prov,
            nums: np.ndarray = nums,
            chunk: int = chunk,
        ) -> None:
            f = cat_fields[j]
            if f.name in vocab_col:
                np.take(finals[f.name].chunk_table(chunk), prov[vocab_col[f.name]], out=x[j])
            else:
                x[j] = quantile_ids(nums[num_col[f.name]], edges[f.name])

        p.pool.run(final_ids, len(cat_fields))
        fx.write(x.T)
        fy.write(_read(ry, "int32", k))
        if fd is not None:
            dense = np.empty((len(dense_fields), k), dtype=np.float32)
            for j, f in enumerate(dense_fields):
                mean, std = moments[f.name]
                dense[j] = np.nan_to_num((nums[num_col[f.name]] - mean) / std, nan=0.0)
            fd.write(dense.T)
        if fb is not None:
            bags = np.full((k, len(p.bag_fields), max_bag), -1, dtype=np.int32)
            for j, f in enumerate(p.bag_fields):
                rl, rv = rbags[f.name]
                lengths = _read(rl, "int32", k).astype(np.int64)
                table = finals[f.name].chunk_table(chunk)
                vals = table[_read(rv, "int32", int(lengths.sum()))]
                rows = np.repeat(np.arange(k), lengths)
                starts = np.cumsum(lengths) - lengths
                pos = np.arange(vals.size) - np.repeat(starts, lengths)
                bags[rows, j, pos] = vals
            fb.write(bags)
    for w in (fx, fy, fd, fb):
        if w is not None:
            w.close()
    for r in (rx, ry, rn, *(x for pair in rbags.values() for x in pair)):
        if r is not None:
            r.close()


def _field_meta(
    f: FieldDef,
    finals: dict[str, FinalVocab],
    edges: dict[str, np.ndarray],
    moments: dict[str, tuple[float, float]],
    max_bag: int,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The meta.json entry of a field and its vocab/<field>.json (None for dense fields)."""
    if f.kind == "dense":
        mean, std = moments[f.name]
        return {
            "name": f.name,
            "kind": "dense",
            "mean": mean,
            "std": std,
            "source": "numeric",
        }, None
    entry: dict[str, Any] = {"name": f.name, "kind": f.kind, "source": f.source}
    vocab: dict[str, Any] = {"field": f.name, "kind": f.kind, "bucketing": f.bucketing}
    if f.quantiles is not None:
        e = edges[f.name]
        vocab.update(
            values=[str(b) for b in range(e.size + 1)] + [""],
            edges=e.tolist(),
            token_type="quantile",
        )
        entry.update(vocab_size=e.size + 3, bucketing=f.bucketing, min_count=1)
    else:
        fv = finals[f.name]
        vocab.update(values=fv.values, token_type=fv.token_type, min_count=f.min_count)
        entry.update(vocab_size=fv.size, min_count=f.min_count)
        if f.bucketing:
            entry["bucketing"] = f.bucketing
    if f.kind == "multivalue":
        entry.update(max_len=max_bag, separator=f.separator)
        vocab["separator"] = f.separator
    return entry, vocab


# --- public entry point ----------------------------------------------------------------------
def prepare(
    format: str | RawFormat,
    inputs: str | Path | Sequence[str | Path] | None,
    out: str | Path,
    *,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    schema: str | Path | None = None,
    min_count: int | dict[str, int] | None = None,
    split: str | Sequence[float] = DEFAULT_SPLIT,
    seed: int = DEFAULT_SEED,
    task: str | None = None,
    overwrite: bool = False,
    on_bad_row: str = "error",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
) -> PrepareResult:
    """Prepare raw files into an encoded dataset directory ``out`` (see ``docs/data.md``).

    Args:
        format: ``criteo``, ``avazu``, ``movielens``, ``frappe``, ``csv`` (or a format object).
        inputs: the training file(s), or the one file(s) to split; several files are read as one.
        out: the dataset directory to create (refused if it exists, unless ``overwrite``).
        valid, test: pre-split validation and test files (both or neither).
        schema: the schema YAML of ``--format csv``.
        min_count: overrides the format's default (an int, or a mapping field -> int).
        split: train:valid:test proportions for single-file input.
        seed: seed of the split.
        task: ``binary`` or ``multiclass`` (MovieLens; csv takes it from the schema).
        on_bad_row: ``error`` (raise DataError naming file and line) or ``skip``.
        chunk_rows: about how many rows are parsed at a time (memory vs. overhead).
        progress: called with the number of rows read so far after each chunk.
        workers: threads that encode the fields of a chunk side by side (0: one per core).
    """
    start = time.perf_counter()
    if on_bad_row not in ("error", "skip"):
        raise ConfigError(
            f"--on-bad-row must be error or skip, got {on_bad_row!r}", column="--on-bad-row"
        )
    if workers < 0:
        raise ConfigError(f"--workers must be >= 0, got {workers}", column="--workers")
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {chunk_rows}", column="--chunk-rows")
    if (valid is None) != (test is None):
        raise ConfigError("pre-split input needs both --valid and --test", column="--valid")
    parts = parse_split(split)
    fmt = (
        format
        if isinstance(format, RawFormat)
        else make_format(
            format, task=task, schema=Path(schema) if schema else None, min_count=min_count
        )
    )
    if inputs is None:
        raise ConfigError("no input file given", column="--input")
    train_files = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not train_files:
        raise ConfigError("no input file given", column="--input")
    files: list[tuple[Path, int | None]] = [(p, None if valid is None else 0) for p in train_files]
    if valid is not None and test is not None:
        files += [(Path(valid), 1), (Path(test), 2)]
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError("output directory exists (use --overwrite to replace it)", path=out)
    # Check every input (exists, not empty, columns) before any work.
    for path, _ in files:
        fmt.check_input(path)
    heads = [read_head(path, fmt.layout(path))[0] for path, _ in files]
    columns = [fmt.bind(path, names, need_label=True) for (path, _), names in zip(files, heads)]

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        digested = [path for path, _ in files] + list(fmt.side_inputs())
        with FieldPool(workers) as pool, BackgroundDigests(digested) as digests:
            skip_bad = on_bad_row == "skip"
            meta = _run_pass(
                fmt, files, columns, tmp, parts, seed, skip_bad, chunk_rows, progress, digests, pool
            )
        meta["protocol"].update(split=list(parts) if valid is None else "pre-split", seed=seed)
        meta["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        _commit(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    sizes = {f["name"]: f["vocab_size"] for f in meta["fields"] if "vocab_size" in f}
    return PrepareResult(out, dict(meta["splits"]), sizes, seconds, meta["bad_rows"], meta)


def _commit(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory onto ``out`` (replacing it if allowed)."""
    old = None
    if out.exists():
        if not overwrite:
            raise ConfigError("output directory exists (use --overwrite to replace it)", path=out)
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    try:
        os.rename(tmp, out)
    except OSError as exc:  # another process created ``out`` meanwhile
        if out.exists():
            raise ConfigError("output directory exists (created meanwhile)", path=out) from exc
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _convert(fmt: RawFormat, chunk: Chunk) -> tuple[Chunk | None, ChunkData]:
    """Convert a chunk; the raw chunk is handed on only when a row is bad (to quote the value
    in the error), so that a converted chunk waiting in the pipeline keeps alive only what its
    converted columns still use."""
    data = fmt.transform(chunk.batch, has_label=True)
    bad = any(p.mask.any() for p in data.problems)
    return (chunk if bad else None), data


def _run_pass(
    fmt: RawFormat,
    files: list[tuple[Path, int | None]],
    columns: list[list[str]],
    tmp: Path,
    parts: tuple[float, float, float],
    seed: int,
    skip_bad: bool,
    chunk_rows: int,
    progress: Callable[[int], None] | None,
    digests: BackgroundDigests,
    pool: FieldPool,
) -> dict[str, Any]:
    raw = tmp / "_raw"
    p = _Pass(fmt, raw, seed, skip_bad, pool)
    fmt.load_side_data(skip_bad, p.bad)
    row = 0  # rows read from the inputs, the key of the split hash
    for (path, fixed), cols in zip(files, columns):
        layout = fmt.layout(path)
        chunks = iter_chunks(
            path,
            layout,
            cols,
            chunk_rows=chunk_rows,
            skip_bad=skip_bad,
            bad=p.bad,
            background=False,
        )
        # Two stages on two threads: a background thread parses and converts the next chunk
        # while this one is encoded (here and by the field pool).
        converted = prefetch(_convert(fmt, c) for c in chunks)
        for chunk, data in converted:
            n = data.n
            split = (
                np.full(n, fixed, dtype=np.uint8)
                if fixed is not None
                else split_of_rows(row, n, seed, parts)
            )
            row += n
            checked = p.check(data, chunk, path)
            if checked is not data:
                split = split[~np.logical_or.reduce([q.mask for q in data.problems])]
            p.feed(checked, split)
            if progress is not None:
                progress(row)
    for sink in p.sinks:
        sink.close()
    counts = {name: sink.rows for name, sink in zip(SPLITS, p.sinks)}
    if sum(counts.values()) == 0:
        raise DataError("no usable data rows", path=files[0][0])
    if counts["train"] == 0:
        raise DataError("no training rows (check --split or the input)", path=files[0][0])

    names = list(p.vocabs)
    finals: dict[str, FinalVocab] = {}

    def finalize(i: int) -> None:
        finals[names[i]] = p.vocabs[names[i]].finalize(_min_count(fmt, names[i]))

    pool.run(finalize, len(names))
    edges = {
        f.name: _quantile_edges(p.stats[f.name], f.quantiles)
        for f in p.number_fields
        if f.quantiles is not None
    }
    moments: dict[str, tuple[float, float]] = {}
    for f in p.number_fields:
        if f.kind == "dense":
            st = p.stats[f.name]
            mean = st.total / max(st.count, 1)
            var = st.total_sq / max(st.count, 1) - mean * mean
            moments[f.name] = (mean, float(np.sqrt(var)) if var > 1e-12 else 1.0)
    max_bag = max([1, *(s.max_bag for s in p.sinks)])
    for sink in p.sinks:
        _write_split(sink, tmp, p, finals, edges, moments, max_bag, chunk_rows)
    shutil.rmtree(raw)

    (tmp / "vocab").mkdir()
    fields_meta = []
    for f in fmt.fields:
        entry, vocab = _field_meta(f, finals, edges, moments, max_bag)
        fields_meta.append(entry)
        if vocab is not None:
            (tmp / "vocab" / f"{f.name}.json").write_text(
                json.dumps(vocab) + "\n", encoding="utf-8"
            )
    side = _save_side_data(fmt, tmp)
    label_counts: dict[str, list[int]] = {
        name: [int(c) for c in sink.label_counts] for name, sink in zip(SPLITS, p.sinks)
    }
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "format": fmt.name,
        "task": fmt.task,
        "num_classes": fmt.num_classes,
        "label": fmt.label,
        "fields": fields_meta,
        "splits": counts,
        "protocol": {
            "min_count": fmt.min_count if fmt.min_count is not None else fmt.default_min_count,
            "min_count_counted_on": "train rows only",
            "oov_id": 0,
            "split_method": "seeded per-row hash (splitmix64 of seed and row number)",
            **fmt.parameters(),
        },
        "inputs": [
            {**digests.get(path), "split": SPLITS[fixed] if fixed is not None else "all"}
            for path, fixed in files
        ]
        + [{**digests.get(path), "split": "side"} for path in fmt.side_inputs()],
        "class_counts": label_counts,
        "bad_rows": p.bad.as_dict(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "autoloss_version": __version__,
    }
    if side:
        meta["side_data"] = side
    if fmt.task == "binary":
        meta["positive_rate"] = {
            name: _rate(counts_of_split) for name, counts_of_split in label_counts.items()
        }
    return meta


def _rate(class_counts: list[int]) -> float:
    total = int(np.sum(class_counts))
    return class_counts[1] / total if len(class_counts) > 1 and total else 0.0


def _min_count(fmt: RawFormat, name: str) -> int:
    return next(f.min_count for f in fmt.fields if f.name == name)


def _save_side_data(fmt: RawFormat, tmp: Path) -> dict[str, str]:
    """Keep what encoding new rows needs beyond the vocabularies (MovieLens movies)."""
    if isinstance(fmt, MovieLensFormat) and fmt._movies is not None:
        m = fmt._movies
        table = pa.table({"movieId": m.ids, "genres": m.genres, "year": m.year})
        (tmp / "side").mkdir()
        pq.write_table(table, tmp / "side" / "movies.parquet")
        return {"movies": "side/movies.parquet"}
    return {}
