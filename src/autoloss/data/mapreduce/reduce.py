"""The reduce of a map-reduce ``prepare``: what the inputs' tasks found, merged in input order.

* :func:`reduce_field` (one task per field with a vocabulary): the inputs' distinct values,
  concatenated in input order and dictionary-encoded once, give every value of the field its
  first appearance in the whole stream, as the serial finish does with its chunk dictionaries
  (an input's distinct values are in order of first appearance within it); their training
  counts are summed per value and ranked by the same function as the serial finish
  (:func:`~autoloss.data.vocab.rank_values`: decreasing count, ties by first appearance). It
  writes the field's ``vocab/<field>.json`` and, for each input, the final id of every
  chunk-local id (``final.bin``).
* :func:`number_stats`: the training statistics of the number fields, the chunks' sums added in
  stream order and the bottom-k of the inputs' samples.
* :func:`merge_scans`: bad rows and time ranges, in input order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from autoloss.data import parse_pass
from autoloss.data.finalize import FieldEncodings, field_meta, write_vocab_file
from autoloss.data.formats import FieldDef
from autoloss.data.mapreduce.count import CountResult
from autoloss.data.mapreduce.layout import FileSpill, Plan
from autoloss.data.mapreduce.scan import ScanResult
from autoloss.data.parse_pass import NumberStats
from autoloss.data.readers import BadRows
from autoloss.data.vocab import encode_values, final_vocab, rank_values
from autoloss.errors import DataError

#: Entries of an input's chunk-local id table composed at a time (bounded memory).
_BLOCK = 1 << 23


@dataclass(frozen=True)
class ReduceJob:
    """Build the vocabulary of the ``field``-th field with one (:attr:`Plan.counted`)."""

    plan: Plan
    field: int
    files: int
    types: tuple[pa.DataType | None, ...]  # the field's token type in each input
    max_bag: int


def reduce_field(job: ReduceJob) -> dict[str, object]:
    """The field's final vocabulary: its vocab file and each input's id table; its meta entry."""
    plan, j = job.plan, job.field
    f: FieldDef = plan.counted[j]
    spills = [plan.spill(i) for i in range(job.files)]
    values = _distinct_values(spills, j, job.types)
    position, distinct = encode_values(values)
    del values
    per_file = [np.load(s.vocab(j, "counts.npy")) for s in spills]
    counts, keep, final_of_value = rank_values(
        position, np.concatenate([*per_file, np.zeros(0, np.int64)]), len(distinct), f.min_count
    )
    start = 0
    for spill, file_counts in zip(spills, per_file):
        _write_final(spill, j, final_of_value[position[start : start + file_counts.size]])
        start += file_counts.size
    # (The table of the serial finish: per input here, in final.bin, written above.)
    vocab = final_vocab(
        distinct, counts, keep, spills[0].vocab(j, "final.bin"), np.zeros(1, np.int64)
    )
    entry, saved = field_meta(f, FieldEncodings({f.name: vocab}, {}, {}, job.max_bag))
    assert saved is not None
    write_vocab_file(plan.build, f.name, saved)
    return entry


def _distinct_values(
    spills: list[FileSpill], j: int, types: tuple[pa.DataType | None, ...]
) -> pa.ChunkedArray:
    """The inputs' distinct values of field ``j``, in input order, in the type of the first
    input whose tokens have one (as the serial vocabulary casts later chunks to its first)."""
    first = next((t for t in types if t is not None), None)
    arrays = []
    for spill in spills:
        values = spill.read_distinct(j)
        if first is not None and values.type != first:
            try:
                values = pc.cast(values, first)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"tokens of one field changed type ({first} then {values.type})"
                ) from exc
        arrays.append(values)
    return pa.chunked_array(arrays, type=first or pa.string())


def _write_final(spill: FileSpill, j: int, final_of_file_value: np.ndarray) -> None:
    """The final id of each chunk-local id of one input (its ``to_file.bin`` composed with the
    final id of each of its distinct values), block by block."""
    to_file = np.memmap(spill.vocab(j, "to_file.bin"), dtype=np.int32, mode="r")
    with spill.vocab(j, "final.bin").open("wb") as out:
        for lo in range(0, to_file.size, _BLOCK):
            out.write(final_of_file_value[to_file[lo : lo + _BLOCK]].astype(np.int32).data)
    del to_file


def number_stats(plan: Plan, counts: list[CountResult]) -> list[NumberStats]:
    """Each number field's training statistics, as the serial pass would have gathered them."""
    stats = []
    for j, f in enumerate(plan.number_fields):
        st = NumberStats()
        for result in counts:  # the chunks in stream order
            for (total, total_sq), n in zip(result.moments[:, j], result.values[:, j]):
                st.total += float(total)
                st.total_sq += float(total_sq)
                st.count += int(n)
        if f.quantiles is not None:
            st.keys, st.sample = _bottom_k(plan, j, len(counts))
        stats.append(st)
    return stats


def _bottom_k(plan: Plan, j: int, files: int) -> tuple[np.ndarray, np.ndarray]:
    """The values of the smallest keys over every input's sample of number field ``j``."""
    keys, values = [], []
    for i in range(files):
        with np.load(plan.spill(i).path("sample.npz")) as saved:
            keys.append(saved[f"keys{j}"])
            values.append(saved[f"values{j}"])
    k, v = np.concatenate(keys), np.concatenate(values)
    size = parse_pass.QUANTILE_SAMPLE  # (looked up here: the serial pass's own, as it is now)
    if k.size > size:
        keep = np.argpartition(k, size)[:size]
        k, v = k[keep], v[keep]
    return k, v


def merge_scans(scans: list[ScanResult], bad: BadRows) -> dict[str, list[float]]:
    """Add the inputs' bad rows to ``bad`` in input order; the time range of each split (in
    order of first appearance, as the serial pass records them)."""
    ranges: dict[str, list[float]] = {}
    for scan in scans:
        for reason, n in scan.bad.counts.items():
            bad.add(reason, n)
        for example in scan.bad.examples:
            if len(bad.examples) < 5:
                bad.examples.append(example)
        for name, (lo, hi) in scan.time_range.items():
            old = ranges.get(name, [lo, hi])
            ranges[name] = [min(old[0], lo), max(old[1], hi)]
    return ranges
