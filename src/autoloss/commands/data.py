"""``autoloss prepare`` and ``autoloss synth``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoloss.data.formats import FORMATS
from autoloss.data.implicit import DEFAULT_CLEAN_RATING, DEFAULT_NEGATIVES
from autoloss.data.mapreduce.executors import EXECUTORS
from autoloss.data.prepare import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_SEED,
    PrepareResult,
    clean_stale,
    prepare,
)
from autoloss.data.splits import parse_split_option, require_every_split
from autoloss.errors import ConfigError


def _min_count(text: str) -> int | dict[str, int]:
    """``10`` or ``C1=5,C2=20`` (unlisted fields keep the format's default)."""
    try:
        if "=" not in text:
            value: int | dict[str, int] = int(text)
        else:
            pairs = (item.split("=", 1) for item in text.split(",") if item)
            value = {k.strip(): int(v) for k, v in pairs}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected N or FIELD=N,..., got {text!r}") from exc
    counts = value.values() if isinstance(value, dict) else [value]
    if min(counts, default=1) < 1:
        raise argparse.ArgumentTypeError(f"min-count must be >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    """A seed in 0..2**32-1 (what NumPy's generators accept)."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0..{2**32 - 1}, got {value}")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="encode raw data into a dataset directory",
        description="Encode raw files (criteo, avazu, movielens, frappe, csv) into a dataset "
        "directory of int32 memmaps, vocabularies and meta.json. With no --input and format "
        "movielens, the embedded ml-latest-small is used.",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="layout of --input (required with --input; without it: movielens, embedded data)",
    )
    p.add_argument(
        "--input",
        nargs="+",
        type=Path,
        help="training file(s), or file(s) to split (csv/frappe: also .parquet)",
    )
    p.add_argument("--out", type=Path, required=True, help="dataset directory to create")
    p.add_argument("--valid", type=Path, help="pre-split validation file")
    p.add_argument("--test", type=Path, help="pre-split test file")
    p.add_argument("--schema", type=Path, help="schema YAML (--format csv)")
    p.add_argument("--min-count", type=_min_count, help="N, or FIELD=N,... (default per format)")
    p.add_argument(
        "--split",
        default="8:1:1",
        help="train:valid:test of a single input (rows hashed), or temporal[:8:1:1]: by time, "
        "the past in train, the future in valid and test (movielens; csv with 'time:' in "
        "the schema)",
    )
    p.add_argument("--seed", type=_seed, default=DEFAULT_SEED, help="seed of the split")
    p.add_argument(
        "--task",
        choices=("binary", "multiclass", "implicit"),
        default=None,
        help="implicit (movielens): every rating a positive, sampled unrated movies negatives, "
        "positives rated below --clean-rating noisy (kept in train and valid, not in test)",
    )
    p.add_argument(
        "--negatives",
        type=int,
        default=None,
        help=f"--task implicit: negatives sampled per positive (default {DEFAULT_NEGATIVES})",
    )
    p.add_argument(
        "--clean-rating",
        type=float,
        default=None,
        help="--task implicit: positives rated below it are noisy "
        f"(default {DEFAULT_CLEAN_RATING:g})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--clean",
        action="store_true",
        help="only remove the temporary directories that interrupted runs left beside --out "
        "(their process is gone); prepare also does so before it starts",
    )
    p.add_argument("--on-bad-row", choices=("error", "skip"), default="error")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    p.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="rows read and rows/s on stderr (auto: when stderr is a terminal)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="threads that encode the fields of a chunk side by side (default 0: one per core; "
        "the result does not depend on it); with --executor ray, the most tasks at once "
        "(0: the cluster's CPUs)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local (default): this process reads the inputs one after the other; ray: a "
        "map-reduce over the input files on Ray tasks, one file per task (the same dataset "
        "byte for byte; needs 'autoloss-rec[ray]', and the inputs and --out on storage every "
        "node sees)",
    )
    p.add_argument(
        "--address",
        help="--executor ray: the Ray cluster (ray.init address; default RAY_ADDRESS, else a "
        "new local instance)",
    )
    p.set_defaults(func=run_prepare)

    s = subparsers.add_parser(
        "synth",
        help="write a synthetic raw file",
        description="Write synthetic data in the exact raw layout of a format (criteo), with a "
        "planted signal including a feature interaction.",
    )
    s.add_argument("kind", choices=("criteo",))
    s.add_argument("--rows", type=int, required=True)
    s.add_argument(
        "--out",
        type=Path,
        required=True,
        help="file (.gz/.bz2/.zst compress); with --files, the directory of the files",
    )
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument(
        "--files",
        type=int,
        help="write the rows as this many gzip files day_0.gz, day_1.gz, ... in --out (the "
        "layout of Criteo 1TB); together, in order, the rows of one file of the same --rows "
        "and --seed",
    )
    s.set_defaults(func=run_synth)


def run_prepare(args: argparse.Namespace) -> int:
    if args.clean:
        print(clean_stale(args.out).describe(args.out))
        return 0
    inputs = args.input
    task = args.task
    if args.format is None:
        if inputs is not None:
            raise ConfigError(f"--format is required with --input ({', '.join(FORMATS)})")
        args.format = "movielens"
    if inputs is None:
        if args.format != "movielens":
            raise ConfigError(f"--format {args.format} needs --input", column="--input")
        from autoloss.data.embedded import RATINGS

        inputs = [RATINGS]
    parts, _ = parse_split_option(args.split)
    if args.valid is None:
        require_every_split(parts)
    with _terminate_as_exit(), _row_progress(args.progress) as progress:
        result = prepare(
            args.format,
            inputs,
            args.out,
            valid=args.valid,
            test=args.test,
            schema=args.schema,
            min_count=args.min_count,
            split=args.split,
            seed=args.seed,
            task=task,
            overwrite=args.overwrite,
            on_bad_row=args.on_bad_row,
            chunk_rows=args.chunk_rows,
            workers=args.workers,
            progress=progress,
            negatives=args.negatives,
            clean_rating=args.clean_rating,
            executor=args.executor,
            address=args.address,
        )
    print(summary(result))
    return 0


class Terminated(SystemExit):
    """SIGTERM during ``prepare``: unwinds like an interrupt, so the temporary directory goes."""


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` (exit status 143) while the block runs, so that a
    terminated ``prepare`` removes its temporary directory (``kill -9`` leaves it; the next
    ``prepare`` removes it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    except Terminated:
        sys.stderr.write("autoloss prepare: terminated (SIGTERM)\n")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _row_progress(mode: str) -> Iterator[Callable[[int], None] | None]:
    """A progress callback (rows read so far) drawing a tqdm bar on stderr, or None."""
    if not (sys.stderr.isatty() if mode == "auto" else mode == "on"):
        yield None
        return
    from tqdm import tqdm

    seen = [0]
    with tqdm(desc="prepare", unit=" rows", unit_scale=True, dynamic_ncols=True) as bar:

        def update(rows: int) -> None:
            bar.update(rows - seen[0])
            seen[0] = rows

        yield update


def summary(result: PrepareResult) -> str:
    """A short human-readable account of a preparation."""
    meta = result.meta
    lines = [
        f"prepared {result.path} ({meta['format']}, {meta['task']}, {meta['num_classes']} classes)",
        "rows: " + ", ".join(f"{k} {v:,}" for k, v in result.splits.items()),
        "fields: " + ", ".join(f"{k} {v:,}" for k, v in result.vocab_sizes.items()),
    ]
    dense = [f["name"] for f in meta["fields"] if f["kind"] == "dense"]
    if dense:
        lines.append("dense: " + ", ".join(dense))
    lines += _protocol_lines(meta["protocol"])
    bad = result.bad_rows
    if bad.get("total"):
        reasons = "; ".join(f"{r}: {n:,}" for r, n in bad["reasons"].items())
        lines.append(f"skipped {bad['total']:,} bad rows ({reasons})")
    if result.cleaned.removed or result.cleaned.restored:
        lines.append(result.cleaned.describe(result.path) + " (left by interrupted runs)")
    lines.append(f"{result.seconds:.2f} s, {result.rows_per_second:,.0f} rows/s")
    empty = [name for name, n in result.splits.items() if n == 0]
    if empty:
        lines.append(
            f"warning: the {' and '.join(empty)} split(s) hold no rows: training on this "
            "dataset is refused (more rows, or another --split)"
        )
    return "\n".join(lines)


def _protocol_lines(protocol: dict[str, Any]) -> list[str]:
    """The implicit protocol's counts and the temporal split's cut points, if any."""
    lines = []
    imp = protocol.get("implicit")
    if imp:

        def per_split(key: str) -> str:
            return ", ".join(f"{k} {v:,}" for k, v in imp[key].items())

        removed = imp["removed_from_test"]
        lines += [
            f"implicit: positives {per_split('positives')}",
            f"  noisy positives (rating < {imp['clean_rating']:g}) {per_split('noisy_positives')}"
            f"; removed from test: {removed['noisy_positives']:,} "
            f"with {removed['negatives']:,} negatives",
            f"  negatives ({imp['negatives_per_positive']} per positive) {per_split('negatives')}",
        ]
    tmp = protocol.get("temporal")
    if tmp:
        cuts = ", ".join(str(c) for c in tmp["cuts"])
        lines.append(f"temporal split on {tmp['time_column']}: cuts {cuts}")
    return lines


def run_synth(args: argparse.Namespace) -> int:
    from autoloss.data.synth import (
        criteo_file_names,
        write_synthetic_criteo,
        write_synthetic_criteo_files,
    )

    if args.rows < 1:
        raise ConfigError(f"--rows must be >= 1, got {args.rows}", column="--rows")
    if args.files is not None and not 1 <= args.files <= args.rows:
        raise ConfigError(
            f"--files must be in 1..--rows ({args.rows:,}), got {args.files}", column="--files"
        )
    start = time.perf_counter()
    if args.files is None:
        write_synthetic_criteo(args.out, args.rows, seed=args.seed)
        where = str(args.out)
    else:
        if args.out.exists() and not args.out.is_dir():
            raise ConfigError("is a file; --files writes into a directory", path=args.out)
        write_synthetic_criteo_files(args.out, args.rows, args.files, seed=args.seed)
        names = criteo_file_names(args.files)
        shown = names[0] if len(names) == 1 else f"{names[0]} ... {names[-1]}"
        where = f"{args.out} ({args.files} files {shown})"
    seconds = time.perf_counter() - start
    print(f"wrote {args.rows:,} synthetic {args.kind} rows to {where} in {seconds:.2f} s")
    sys.stdout.flush()
    return 0
