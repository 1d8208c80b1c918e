"""The map-reduce that replaces the serial parse pass and its finish (``prepare --executor ray``).

Five phases, each a set of independent tasks run by a
:class:`~autoloss.data.mapreduce.executors.TaskExecutor`, each waiting for the one before:

1. **scan**, one task per input (:mod:`~autoloss.data.mapreduce.scan`): read, check, encode
   chunk-locally, spill; how many rows it read;
2. **count**, one task per input (:mod:`~autoloss.data.mapreduce.count`): with the first row
   number of each input now known, the split of every row and the training counts;
3. **sample**, one task per input, only with quantile-bucketed fields;
4. **reduce**, one task per field with a vocabulary (:mod:`~autoloss.data.mapreduce.reduce`):
   the final vocabulary, the final id of every chunk-local id;
5. **encode**, one task per input (:mod:`~autoloss.data.mapreduce.encode`): the rows written
   into the final arrays, allocated beforehand.

Everything is merged in input order, so the dataset is the serial ``prepare``'s, byte for byte
(meta.json too, but for its creation time and seconds). The tasks' files live in a scratch
directory of the temporary dataset directory, removed at the end; a failure anywhere leaves
the temporary directory to ``prepare``, which removes it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.data.finalize import (
    FieldEncodings,
    PassOutcome,
    field_meta,
    quantile_edges,
    write_vocab_file,
)
from autoloss.data.finalize import _moments as moments_of
from autoloss.data.formats import RawFormat
from autoloss.data.mapreduce.count import (
    CountJob,
    CountResult,
    count_file,
    merge_class_counts,
    sample_file,
)
from autoloss.data.mapreduce.encode import EncodeJob, allocate_splits, encode_file
from autoloss.data.mapreduce.executors import TaskExecutor
from autoloss.data.mapreduce.layout import Plan
from autoloss.data.mapreduce.reduce import ReduceJob, merge_scans, number_stats, reduce_field
from autoloss.data.mapreduce.scan import FileJob, ScanResult, scan_file
from autoloss.data.parse_pass import PassInput, PassOptions
from autoloss.data.readers import BadRows
from autoloss.data.store import SPLITS
from autoloss.errors import DataError


def run_mapreduce(
    fmt: RawFormat,
    inputs: list[PassInput],
    opts: PassOptions,
    build: Path,
    tasks: TaskExecutor,
    bad: BadRows,
) -> PassOutcome:
    """Encode ``inputs`` into the dataset directory ``build`` (arrays and vocabulary files);
    bad rows are added to ``bad``. See the module doc."""
    fmt.load_side_data(opts.skip_bad, bad)
    plan = Plan(fmt, replace(opts, progress=None), build)
    with tasks:
        scans = _scan(plan, inputs, tasks, opts.progress)
        time_range = merge_scans(scans, bad)
        jobs = _count_jobs(plan, scans)
        counts = tasks.map(count_file, jobs)
        rows = _split_rows(counts, inputs[0])
        enc = _encodings(plan, tasks, jobs, counts, max([1, *(s.max_bag for s in scans)]))
        fields_meta = _fields_meta(plan, tasks, scans, enc)
        _encode(plan, tasks, jobs, counts, rows, enc)
    shutil.rmtree(plan.root)
    labels = [np.zeros(0, dtype=np.int64) for _ in SPLITS]
    for result in counts:
        labels = [merge_class_counts(a, b) for a, b in zip(labels, result.labels)]
    return PassOutcome(
        counts=dict(zip(SPLITS, rows)),
        label_counts={name: [int(c) for c in lc] for name, lc in zip(SPLITS, labels)},
        fields_meta=fields_meta,
        time_range=time_range,
    )


def _scan(
    plan: Plan,
    inputs: list[PassInput],
    tasks: TaskExecutor,
    progress: Callable[[int], None] | None,
) -> list[ScanResult]:
    """Phase 1: every input scanned (``progress``: the rows read so far, as inputs finish)."""
    read = [0] * len(inputs)

    def done(i: int, result: ScanResult) -> None:
        read[i] = result.read
        if progress is not None:
            progress(sum(read))

    jobs = [FileJob(plan, i, inp) for i, inp in enumerate(inputs)]
    return tasks.map(scan_file, jobs, done)


def _count_jobs(plan: Plan, scans: list[ScanResult]) -> list[CountJob]:
    """Phase 2's jobs: each input with the number of its first row in the stream."""
    firsts = [0, *accumulate(s.read for s in scans)]
    return [
        CountJob(plan, i, tuple(s.chunks), tuple(s.distinct), firsts[i])
        for i, s in enumerate(scans)
    ]


def _split_rows(counts: list[CountResult], first: PassInput) -> list[int]:
    """The rows of each split; the serial pass's errors when there is nothing to train on."""
    rows = [sum(c.rows[s] for c in counts) for s in range(len(SPLITS))]
    if sum(rows) == 0:
        raise DataError("no usable data rows", path=first.bound.path)
    if rows[0] == 0:
        raise DataError("no training rows (check --split or the input)", path=first.bound.path)
    return rows


def _encodings(
    plan: Plan, tasks: TaskExecutor, jobs: list[CountJob], counts: list[CountResult], max_bag: int
) -> FieldEncodings:
    """Phase 3 (the quantile samples, if any) and the number fields' encodings."""
    if any(f.quantiles is not None for f in plan.number_fields):
        before = [0, *accumulate(c.draws for c in counts)]
        tasks.map(sample_file, [replace(job, draws_before=before[job.index]) for job in jobs])
    stats = number_stats(plan, counts)
    edges, moments = {}, {}
    for f, st in zip(plan.number_fields, stats):
        if f.quantiles is not None:
            edges[f.name] = quantile_edges(st, f.quantiles)
        if f.kind == "dense":
            moments[f.name] = moments_of(st)
    return FieldEncodings({}, edges, moments, max_bag)


def _fields_meta(
    plan: Plan, tasks: TaskExecutor, scans: list[ScanResult], enc: FieldEncodings
) -> list[dict[str, Any]]:
    """Phase 4: the vocabularies; every field's meta.json entry and vocabulary file."""
    (plan.build / "vocab").mkdir()
    jobs = [
        ReduceJob(plan, j, len(scans), tuple(s.types[j] for s in scans), enc.max_bag)
        for j in range(len(plan.counted))
    ]
    reduced = dict(zip((f.name for f in plan.counted), tasks.map(reduce_field, jobs)))
    entries = []
    for f in plan.fmt.fields:
        if f.name in reduced:
            entries.append(reduced[f.name])
            continue
        entry, vocab = field_meta(f, enc)
        if vocab is not None:
            write_vocab_file(plan.build, f.name, vocab)
        entries.append(entry)
    return entries


def _encode(
    plan: Plan,
    tasks: TaskExecutor,
    jobs: list[CountJob],
    counts: list[CountResult],
    rows: list[int],
    enc: FieldEncodings,
) -> None:
    """Phase 5: the final arrays allocated, then every input's rows written into them."""
    arrays = tuple(allocate_splits(plan, rows, enc.max_bag))
    starts = [
        [0, *accumulate(c.rows[s] for c in counts)] for s in range(len(SPLITS))
    ]  # per split: the first row of each input
    tasks.map(
        encode_file,
        [
            EncodeJob(
                plan,
                job.index,
                job.chunks,
                job.first_row,
                tuple(starts[s][job.index] for s in range(len(SPLITS))),
                arrays,
                enc.edges,
                enc.moments,
                enc.max_bag,
            )
            for job in jobs
        ],
    )
