"""Streaming preparation of raw files into an encoded dataset directory: :func:`prepare`.

:func:`prepare` checks its options and every input, binds the inputs to their format, then
builds the dataset in a temporary directory beside the target:

0. for two protocols, a pre-pass: ``--split temporal`` reads the time column once for the cut
   points (:mod:`autoloss.data.temporal`); MovieLens ``--task implicit`` reads the ratings and
   writes the implicit rows (positives, sampled negatives) as pre-split tables that the parse
   pass then encodes (:mod:`autoloss.data.implicit`);
1. one parse pass over the inputs, chunk by chunk (:mod:`autoloss.data.parse_pass`): rows
   converted, split, dictionary-encoded per chunk and spilled to per-split temporary files
   (:mod:`autoloss.data.spill`);
2. the finish (:mod:`autoloss.data.finalize`): each field's vocabulary built once, the spill
   files streamed into the final ``.npy`` arrays, the vocabulary files written;
3. here: the format's side tables, ``meta.json``, and a rename onto the target (:func:`_commit`;
   a failure at any step leaves no trace and any existing target untouched).

The temporary directory names its owner (:mod:`autoloss.data.tmpdirs`): one left by a killed
run (``kill -9``) is removed by the next ``prepare`` of the same target, before it starts.

Memory is a few chunks in flight, whatever the number of rows, plus one field's
dictionaries at a time at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from autoloss import __version__
from autoloss.data.finalize import (
    PassOutcome,
    finish_fields,
    quantile_ids,
    write_field_meta,
    write_splits,
)
from autoloss.data.formats import MovieLensFormat, RawFormat, make_format
from autoloss.data.implicit import (
    DEFAULT_CLEAN_RATING,
    DEFAULT_NEGATIVES,
    ImplicitOptions,
    build_implicit,
    write_noisy_rows,
)
from autoloss.data.mapreduce.executors import TaskExecutor, task_executor
from autoloss.data.mapreduce.plan import run_mapreduce
from autoloss.data.parallel import FieldPool
from autoloss.data.parse_pass import ParsePass, PassInput, PassOptions
from autoloss.data.readers import BackgroundDigests, BadRows, read_head
from autoloss.data.splits import parse_split, parse_split_option, split_of_rows
from autoloss.data.store import FORMAT_VERSION, SPLITS
from autoloss.data.temporal import scan_time_cuts, time_ranges
from autoloss.data.tmpdirs import (
    Cleaned,
    clean_stale,
    make_build_dir,
    owned_name,
    release_build_dir,
    remove,
)
from autoloss.errors import ConfigError, DataError, StorageError
from autoloss.files import (
    check_writable,
    file_sha256,
    is_storage_error,
    storage_reason,
    write_text,
)

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_SEED",
    "DEFAULT_SPLIT",
    "Cleaned",
    "ImplicitOptions",
    "PrepareResult",
    "check_output",
    "clean_stale",
    "parse_split",
    "prepare",
    "quantile_ids",
    "split_of_rows",
]

DEFAULT_CHUNK_ROWS = 262_144
DEFAULT_SEED = 2021
DEFAULT_SPLIT = (8.0, 1.0, 1.0)
_HASH_SPLIT = "seeded per-row hash (splitmix64 of seed and row number)"


@dataclass(frozen=True)
class _Protocol:
    """The protocols that need a pre-pass (see the module doc)."""

    temporal: bool = False  # --split temporal
    implicit: ImplicitOptions | None = None  # --task implicit (MovieLens)


@dataclass
class PrepareResult:
    """What ``prepare`` did."""

    path: Path
    splits: dict[str, int]
    vocab_sizes: dict[str, int]
    seconds: float
    bad_rows: dict[str, Any]
    meta: dict[str, Any] = field(repr=False, default_factory=dict)
    cleaned: Cleaned = field(default_factory=Cleaned)  # stale temporary directories removed

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


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
    negatives: int | None = None,
    clean_rating: float | None = None,
    executor: str | TaskExecutor = "local",
    address: str | None = None,
) -> PrepareResult:
    """Prepare raw files into an encoded dataset directory ``out`` (see ``docs/data.md``).

    Args:
        format: ``criteo``, ``avazu``, ``movielens``, ``frappe``, ``csv`` (or a format object).
        inputs: the training file(s), or the one file(s) to split; several files are read as one.
        out: the dataset directory to create (refused if it exists, unless ``overwrite``).
        valid, test: pre-split validation and test files (both or neither).
        schema: the schema YAML of ``--format csv``.
        min_count: overrides the format's default (an int, or a mapping field -> int).
        split: train:valid:test proportions for single-file input (``"8:1:1"``), or
            ``"temporal"`` / ``"temporal:8:1:1"``: by the time column (MovieLens, csv with a
            schema ``time``), the past in train, the future in valid and test.
        seed: seed of the split (and of the implicit protocol's negatives).
        task: ``binary`` or ``multiclass`` (MovieLens; csv takes it from the schema), or
            ``implicit`` (MovieLens: every rating a positive, sampled negatives).
        negatives, clean_rating: the implicit protocol's negatives per positive (default 2)
            and the rating below which a positive is noisy (default 4).
        on_bad_row: ``error`` (raise DataError naming file and line) or ``skip``.
        chunk_rows: about how many rows are parsed at a time (memory vs. overhead).
        progress: called with the number of rows read so far after each chunk.
        workers: threads that encode the fields of a chunk side by side (0: one per core);
            with ``executor="ray"``, the most tasks run at once (0: the cluster's CPUs).
        executor: ``local`` (one process reads the inputs one after the other), ``ray`` (a
            map-reduce over the input files on Ray tasks, the same dataset byte for byte), or
            a :class:`~autoloss.data.mapreduce.executors.TaskExecutor` that runs that
            map-reduce's tasks (in this process, on threads).
        address: with ``executor="ray"``, the cluster to connect to (default: ``RAY_ADDRESS``,
            else a new local instance).
    """
    start = time.perf_counter()
    _check_options(on_bad_row, workers, chunk_rows, valid, test)
    tasks = task_executor(executor, address, workers)  # a missing Ray: one line, nothing written
    parts, temporal = parse_split_option(split)
    if temporal and valid is not None:
        raise ConfigError(
            "--split temporal splits one input by time; pre-split input (--valid/--test) "
            "is split already",
            column="--split",
        )
    protocol = _Protocol(temporal, _implicit_options(format, task, negatives, clean_rating, valid))
    opts = PassOptions(parts, seed, on_bad_row == "skip", chunk_rows, progress)
    fmt = (
        format
        if isinstance(format, RawFormat)
        else make_format(
            format,
            task="binary" if protocol.implicit else task,
            schema=Path(schema) if schema else None,
            min_count=min_count,
        )
    )
    if temporal:
        fmt.enable_time()
    files = _input_files(inputs, valid, test)
    out = Path(out)
    check_output(out, overwrite, [p for p, _ in files])
    bound = _bind_inputs(fmt, files)
    cleaned = clean_stale(out)
    meta = _build(fmt, bound, out, opts, workers, overwrite, start, protocol, tasks)
    seconds = time.perf_counter() - start
    sizes = {f["name"]: f["vocab_size"] for f in meta["fields"] if "vocab_size" in f}
    return PrepareResult(
        out, dict(meta["splits"]), sizes, seconds, meta["bad_rows"], meta, cleaned=cleaned
    )


def check_output(out: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """ConfigError (naming ``--out``) for a target that cannot or must not be (re)placed: under
    a file, an existing file or directory without ``overwrite``, an input or a directory that
    holds one."""
    check_writable(out)
    if not (out.exists() or out.is_symlink()):
        return
    is_dir = out.is_dir()
    here = out.resolve()
    # (Replacing a link removes the link only: what it points to is safe.)
    for p in [] if out.is_symlink() else inputs:
        try:
            src = p.resolve()
        except OSError:
            continue
        if src == here or (is_dir and here in src.parents):
            raise ConfigError(
                f"{'holds' if src != here else 'is'} the input {p}: choose another --out",
                path=out,
                column="--out",
            )
    if not overwrite:
        what = "output directory exists" if is_dir else "is a file, not a dataset directory"
        raise ConfigError(f"{what} (use --overwrite to replace it)", path=out, column="--out")


# --- options and inputs ----------------------------------------------------------------------
def _check_options(
    on_bad_row: str,
    workers: int,
    chunk_rows: int,
    valid: str | Path | None,
    test: str | Path | None,
) -> None:
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


def _implicit_options(
    format: str | RawFormat,
    task: str | None,
    negatives: int | None,
    clean_rating: float | None,
    valid: str | Path | None,
) -> ImplicitOptions | None:
    """The implicit protocol's options (``task == "implicit"``), checked; else None."""
    if task != "implicit":
        for option, value in (("--negatives", negatives), ("--clean-rating", clean_rating)):
            if value is not None:
                raise ConfigError(
                    f"{option} is for --task implicit (--format movielens)", column=option
                )
        return None
    if not (format == "movielens" or isinstance(format, MovieLensFormat)):
        name = format.name if isinstance(format, RawFormat) else format
        raise ConfigError(f"--task implicit is for --format movielens, not {name}", column="--task")
    if valid is not None:
        raise ConfigError(
            "--task implicit splits the ratings itself: give them as --input, "
            "without --valid/--test",
            column="--valid",
        )
    return ImplicitOptions(
        DEFAULT_NEGATIVES if negatives is None else negatives,
        DEFAULT_CLEAN_RATING if clean_rating is None else float(clean_rating),
    )


def _input_files(
    inputs: str | Path | Sequence[str | Path] | None,
    valid: str | Path | None,
    test: str | Path | None,
) -> list[tuple[Path, int | None]]:
    """Every input with the split of all its rows (None: rows hashed to a split)."""
    if inputs is None:
        raise ConfigError("no input file given", column="--input")
    given = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    train_files = [f for p in given for f in _directory_files(p)]
    if not train_files:
        raise ConfigError("no input file given", column="--input")
    files: list[tuple[Path, int | None]] = [(p, None if valid is None else 0) for p in train_files]
    if valid is not None and test is not None:
        files += [(Path(valid), 1), (Path(test), 2)]
    return files


def _directory_files(path: Path) -> list[Path]:
    """``path``, or the files of a directory ``path`` in natural order (``day_2`` before
    ``day_10``: the order of Criteo 1TB's days), hidden files left out."""
    if not path.is_dir():
        return [path]
    files = [f for f in path.iterdir() if f.is_file() and not f.name.startswith(".")]
    if not files:
        raise DataError("the input directory has no files", path=path)
    return sorted(
        files, key=lambda f: [int(t) if t.isdigit() else t for t in _DIGITS.split(f.name)]
    )


_DIGITS = re.compile(r"(\d+)")


def _bind_inputs(fmt: RawFormat, files: list[tuple[Path, int | None]]) -> list[PassInput]:
    """Check every input (exists, not empty, columns) before any work, and bind it."""
    for path, _ in files:
        fmt.check_input(path)
    heads = [read_head(path, fmt.layout(path))[0] for path, _ in files]
    return [
        PassInput(fmt.bind_input(path, names, need_label=True), fixed)
        for (path, fixed), names in zip(files, heads)
    ]


# --- building the directory ------------------------------------------------------------------
def _build(
    fmt: RawFormat,
    inputs: list[PassInput],
    out: Path,
    opts: PassOptions,
    workers: int,
    overwrite: bool,
    start: float,
    protocol: _Protocol,
    tasks: TaskExecutor | None = None,
) -> dict[str, Any]:
    """Build the dataset in a temporary directory beside ``out``, then commit it; its meta
    (``tasks``: run the map-reduce on them instead of the serial pass)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create its parent directory ({(exc.strerror or str(exc)).lower()})",
            path=out,
            column="--out",
        ) from None
    tmp = None
    try:
        tmp = make_build_dir(out)
        digested = [inp.bound.path for inp in inputs] + list(fmt.side_inputs())
        threads = workers if tasks is None else 1
        with FieldPool(threads) as pool, BackgroundDigests(digested) as digests:
            meta = _write_dataset(fmt, inputs, tmp, opts, pool, digests, protocol, tasks)
        meta["seconds"] = round(time.perf_counter() - start, 3)
        write_text(tmp / "meta.json", json.dumps(meta, indent=1) + "\n")
        release_build_dir(tmp)
        _commit(tmp, out, overwrite)
    except (OSError, StorageError) as exc:
        if tmp is not None:
            remove(tmp)
        if isinstance(exc, StorageError) or is_storage_error(exc):
            reason = exc.reason if isinstance(exc, StorageError) else storage_reason(exc)
            raise StorageError(
                f"cannot write the dataset: {reason}; nothing of it was left behind", path=out
            ) from None
        raise
    except BaseException:
        if tmp is not None:
            remove(tmp)
        raise
    return meta


@dataclass
class _PrePassed:
    """What the parse pass reads after the pre-pass of a protocol (or the inputs as given)."""

    fmt: RawFormat  # the format that encodes ``inputs``
    inputs: list[PassInput]
    opts: PassOptions
    protocol: dict[str, Any]  # entries of meta.json's ``protocol``
    noisy_valid: np.ndarray | None = None  # implicit: the valid split's per-row noisy flags


def _pre_pass(
    fmt: RawFormat,
    inputs: list[PassInput],
    tmp: Path,
    opts: PassOptions,
    protocol: _Protocol,
    bad: BadRows,
) -> _PrePassed:
    """Run the pre-pass of the protocol, if any: the implicit rows or the time cut points."""
    if protocol.implicit is not None:
        assert isinstance(fmt, MovieLensFormat)
        built = build_implicit(fmt, inputs, tmp / "_implicit", opts, protocol.implicit, bad)
        extra: dict[str, Any] = {"task": "implicit", "implicit": built.protocol}
        if built.temporal is not None:
            extra["split_method"] = "temporal (protocol.temporal); negatives follow their positive"
            extra["temporal"] = built.temporal
        else:
            extra["split_method"] = f"{_HASH_SPLIT} of the rating; negatives follow their positive"
        return _PrePassed(built.format, built.inputs, opts, extra, built.noisy_valid)
    if protocol.temporal:
        cuts, described = scan_time_cuts(fmt, inputs, opts)
        extra = {"split_method": "temporal (protocol.temporal)", "temporal": described}
        return _PrePassed(fmt, inputs, replace(opts, cuts=cuts), extra)
    return _PrePassed(fmt, inputs, opts, {})


def _write_dataset(
    fmt: RawFormat,
    inputs: list[PassInput],
    tmp: Path,
    opts: PassOptions,
    pool: FieldPool,
    digests: BackgroundDigests,
    protocol: _Protocol,
    tasks: TaskExecutor | None = None,
) -> dict[str, Any]:
    """Everything but meta.json into ``tmp``: arrays, vocabularies, side tables; the meta."""
    bad = BadRows()
    pre = _pre_pass(fmt, inputs, tmp, opts, protocol, bad)
    fmt = pre.fmt
    if tasks is None:
        done = _serial_pass(fmt, pre, tmp, pool, bad)
    else:
        done = run_mapreduce(fmt, pre.inputs, pre.opts, tmp, tasks, bad)
    counts = done.counts
    if pre.noisy_valid is not None:
        assert len(pre.noisy_valid) == counts["valid"]
        write_noisy_rows(tmp / "valid", pre.noisy_valid)
        shutil.rmtree(tmp / "_implicit")
    if pre.opts.cuts is not None:
        pre.protocol["temporal"]["time_range"] = time_ranges(done.time_range)
    side = _save_side_tables(fmt, tmp)
    meta = _meta(fmt, inputs, opts, digests, done.fields_meta, counts, done.label_counts)
    meta["protocol"].update(pre.protocol)
    meta["bad_rows"] = bad.as_dict()
    meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["autoloss_version"] = __version__
    if side:
        meta["side_data"] = side
    if fmt.task == "binary":
        meta["positive_rate"] = {name: _rate(c) for name, c in done.label_counts.items()}
    meta["digests"] = array_digests(tmp)
    return meta


def _serial_pass(
    fmt: RawFormat, pre: _PrePassed, tmp: Path, pool: FieldPool, bad: BadRows
) -> PassOutcome:
    """The parse pass and its finish in this process: arrays and vocabulary files."""
    raw = tmp / "_raw"
    p = ParsePass(fmt, raw, pre.opts, pool, bad)
    counts = p.run(pre.inputs)
    enc = finish_fields(p)
    write_splits(p, enc, tmp)
    shutil.rmtree(raw)
    label_counts = {
        name: [int(c) for c in sink.label_counts] for name, sink in zip(SPLITS, p.sinks)
    }
    fields_meta = write_field_meta(fmt.fields, enc, tmp)
    return PassOutcome(counts, label_counts, fields_meta, p.time_range)


def array_digests(root: Path) -> dict[str, dict[str, Any]]:
    """SHA-256 and size of every array of the splits (``<split>/*.npy``), by relative path:
    meta.json records them, :meth:`EncodedDataset.check_digests` checks them."""
    out = {}
    for name in SPLITS:
        for p in sorted((root / name).glob("*.npy")):
            digest, size = file_sha256(p)
            out[f"{name}/{p.name}"] = {"sha256": digest, "size": size}
    return out


def _meta(
    fmt: RawFormat,
    inputs: list[PassInput],
    opts: PassOptions,
    digests: BackgroundDigests,
    fields_meta: list[dict[str, Any]],
    counts: dict[str, int],
    label_counts: dict[str, list[int]],
) -> dict[str, Any]:
    """The description of the dataset (meta.json), up to its class counts."""
    pre_split = inputs[0].split is not None
    return {
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
            "split_method": _HASH_SPLIT,
            **fmt.parameters(),
            "split": "pre-split" if pre_split else list(opts.parts),
            "seed": opts.seed,
        },
        "inputs": [
            {**digests.get(inp.bound.path), "split": _split_name(inp.split)} for inp in inputs
        ]
        + [{**digests.get(path), "split": "side"} for path in fmt.side_inputs()],
        "class_counts": label_counts,
    }


def _split_name(fixed: int | None) -> str:
    return SPLITS[fixed] if fixed is not None else "all"


def _rate(class_counts: list[int]) -> float:
    total = int(np.sum(class_counts))
    return class_counts[1] / total if len(class_counts) > 1 and total else 0.0


def _save_side_tables(fmt: RawFormat, tmp: Path) -> dict[str, str]:
    """Keep what encoding new rows needs beyond the vocabularies (the format's side tables,
    e.g. MovieLens movies) as ``side/<name>.parquet``; name -> path for meta.json."""
    tables = fmt.side_tables()
    if not tables:
        return {}
    (tmp / "side").mkdir()
    saved = {}
    for name, table in tables.items():
        saved[name] = f"side/{name}.parquet"
        pq.write_table(table, tmp / saved[name])
    return saved


def _commit(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished temporary directory onto ``out`` (replacing it if allowed: a
    directory, a file or a link; nothing of it is left behind)."""
    old = None
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ConfigError("output directory exists (use --overwrite to replace it)", path=out)
        old = owned_name(out, "old")
        out.rename(old)
    try:
        os.rename(tmp, out)
    except OSError as exc:  # another process created ``out`` meanwhile
        if old is not None and not (out.exists() or out.is_symlink()):
            old.rename(out)  # put the replaced target back
            old = None
        if out.exists():
            raise ConfigError("output directory exists (created meanwhile)", path=out) from exc
        raise
    finally:
        if old is not None:
            remove(old)
