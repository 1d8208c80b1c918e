"""Streaming preparation of raw files into an encoded dataset directory: :func:`prepare`.

:func:`prepare` checks its options and every input, binds the inputs to their format, then
builds the dataset in a temporary directory beside the target:

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

import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from autoloss import __version__
from autoloss.data.finalize import finish_fields, quantile_ids, write_field_meta, write_splits
from autoloss.data.formats import RawFormat, make_format
from autoloss.data.parallel import FieldPool
from autoloss.data.parse_pass import ParsePass, PassInput, PassOptions
from autoloss.data.readers import BackgroundDigests, read_head
from autoloss.data.splits import parse_split, split_of_rows
from autoloss.data.store import FORMAT_VERSION, SPLITS
from autoloss.data.tmpdirs import (
    Cleaned,
    clean_stale,
    make_build_dir,
    owned_name,
    release_build_dir,
    remove,
)
from autoloss.errors import ConfigError
from autoloss.files import check_creatable, write_text

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "DEFAULT_SEED",
    "DEFAULT_SPLIT",
    "Cleaned",
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
# Errors writing the dataset that are the user's to fix: space, quota, permissions.
_STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


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
    _check_options(on_bad_row, workers, chunk_rows, valid, test)
    opts = PassOptions(parse_split(split), seed, on_bad_row == "skip", chunk_rows, progress)
    fmt = (
        format
        if isinstance(format, RawFormat)
        else make_format(
            format, task=task, schema=Path(schema) if schema else None, min_count=min_count
        )
    )
    files = _input_files(inputs, valid, test)
    out = Path(out)
    check_output(out, overwrite, [p for p, _ in files])
    bound = _bind_inputs(fmt, files)
    cleaned = clean_stale(out)
    meta = _build(fmt, bound, out, opts, workers, overwrite, start)
    seconds = time.perf_counter() - start
    sizes = {f["name"]: f["vocab_size"] for f in meta["fields"] if "vocab_size" in f}
    return PrepareResult(
        out, dict(meta["splits"]), sizes, seconds, meta["bad_rows"], meta, cleaned=cleaned
    )


def check_output(out: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """ConfigError (naming ``--out``) for a target that cannot or must not be (re)placed: under
    a file, an existing file or directory without ``overwrite``, an input or a directory that
    holds one."""
    check_creatable(out)
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


def _input_files(
    inputs: str | Path | Sequence[str | Path] | None,
    valid: str | Path | None,
    test: str | Path | None,
) -> list[tuple[Path, int | None]]:
    """Every input with the split of all its rows (None: rows hashed to a split)."""
    if inputs is None:
        raise ConfigError("no input file given", column="--input")
    train_files = [Path(p) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)]
    if not train_files:
        raise ConfigError("no input file given", column="--input")
    files: list[tuple[Path, int | None]] = [(p, None if valid is None else 0) for p in train_files]
    if valid is not None and test is not None:
        files += [(Path(valid), 1), (Path(test), 2)]
    return files


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
) -> dict[str, Any]:
    """Build the dataset in a temporary directory beside ``out``, then commit it; its meta."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create its parent directory ({(exc.strerror or str(exc)).lower()})",
            path=out,
            column="--out",
        ) from None
    tmp = make_build_dir(out)
    try:
        digested = [inp.bound.path for inp in inputs] + list(fmt.side_inputs())
        with FieldPool(workers) as pool, BackgroundDigests(digested) as digests:
            meta = _write_dataset(fmt, inputs, tmp, opts, pool, digests)
        meta["seconds"] = round(time.perf_counter() - start, 3)
        write_text(tmp / "meta.json", json.dumps(meta, indent=1) + "\n")
        release_build_dir(tmp)
        _commit(tmp, out, overwrite)
    except OSError as exc:
        remove(tmp)
        if exc.errno in _STORAGE_ERRORS:
            reason = (exc.strerror or str(exc)).lower()
            raise ConfigError(f"cannot write the dataset ({reason})", path=out) from None
        raise
    except BaseException:
        remove(tmp)
        raise
    return meta


def _write_dataset(
    fmt: RawFormat,
    inputs: list[PassInput],
    tmp: Path,
    opts: PassOptions,
    pool: FieldPool,
    digests: BackgroundDigests,
) -> dict[str, Any]:
    """Everything but meta.json into ``tmp``: arrays, vocabularies, side tables; the meta."""
    raw = tmp / "_raw"
    p = ParsePass(fmt, raw, opts, pool)
    counts = p.run(inputs)
    enc = finish_fields(p)
    write_splits(p, enc, tmp)
    shutil.rmtree(raw)
    fields_meta = write_field_meta(fmt.fields, enc, tmp)
    side = _save_side_tables(fmt, tmp)
    label_counts = {
        name: [int(c) for c in sink.label_counts] for name, sink in zip(SPLITS, p.sinks)
    }
    meta = _meta(fmt, inputs, opts, digests, fields_meta, counts, label_counts)
    meta["bad_rows"] = p.bad.as_dict()
    meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["autoloss_version"] = __version__
    if side:
        meta["side_data"] = side
    if fmt.task == "binary":
        meta["positive_rate"] = {name: _rate(c) for name, c in label_counts.items()}
    return meta


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
            "split_method": "seeded per-row hash (splitmix64 of seed and row number)",
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
