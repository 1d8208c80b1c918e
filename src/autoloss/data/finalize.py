"""Finishing prepare after the parse pass: final encodings, arrays and field descriptions.

1. Each field's final encoding (:func:`finish_fields`): vocabularies built once from the
   spilled chunk dictionaries (min-count, frequency order, OOV = 0; one field's dictionaries
   in memory at a time), quantile edges from the training sample, mean/std of dense fields.
2. Each split's spill files streamed once more, chunk by chunk, through one lookup per field
   (that chunk's local -> final table) into the final ``x.npy``, ``y.npy``, ``dense.npy`` and
   ``bags.npy`` (:func:`write_splits`).
3. The fields' meta.json entries and ``vocab/<field>.json`` files (:func:`write_field_meta`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from autoloss.data.formats import FieldDef, RawFormat
from autoloss.data.parse_pass import NumberStats, ParsePass
from autoloss.data.spill import NpyWriter, SplitSink, read_raw
from autoloss.data.vocab import FinalVocab


@dataclass
class FieldEncodings:
    """How the pass's provisional values become final ones, per field."""

    vocabs: dict[str, FinalVocab]  # categorical fields with a vocabulary, multi-valued fields
    edges: dict[str, np.ndarray]  # quantile-bucketed fields: the bucket edges
    moments: dict[str, tuple[float, float]]  # dense fields: mean, std
    max_bag: int  # the width of bags.npy


@dataclass
class PassOutcome:
    """What meta.json takes from the parse pass and its finish, once the arrays and the
    vocabulary files are written."""

    counts: dict[str, int]  # rows of each split
    label_counts: dict[str, list[int]]  # class counts of each split
    fields_meta: list[dict[str, Any]]  # meta.json's field entries
    time_range: dict[str, list[float]]  # --split temporal: each split's first and last time


# --- 1. final encodings ----------------------------------------------------------------------
def finish_fields(p: ParsePass) -> FieldEncodings:
    """Build every field's final encoding from what the pass gathered."""
    names = list(p.vocabs)
    finals: dict[str, FinalVocab] = {}

    def build(i: int) -> None:
        finals[names[i]] = p.vocabs[names[i]].finalize(_min_count(p.fmt, names[i]))

    p.pool.run(build, len(names))
    edges = {
        f.name: quantile_edges(p.stats[f.name], f.quantiles)
        for f in p.number_fields
        if f.quantiles is not None
    }
    moments = {f.name: _moments(p.stats[f.name]) for f in p.number_fields if f.kind == "dense"}
    max_bag = max([1, *(s.max_bag for s in p.sinks)])
    return FieldEncodings(finals, edges, moments, max_bag)


def _min_count(fmt: RawFormat, name: str) -> int:
    return next(f.min_count for f in fmt.fields if f.name == name)


def quantile_edges(stats: NumberStats, n: int) -> np.ndarray:
    """The edges of ``n`` quantile buckets of the training sample (fewer when values repeat)."""
    if stats.sample.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(stats.sample, np.linspace(0, 1, n + 1)[1:-1]))


def _moments(st: NumberStats) -> tuple[float, float]:
    """Mean and standard deviation of the training values (std 1 when constant)."""
    mean = st.total / max(st.count, 1)
    var = st.total_sq / max(st.count, 1) - mean * mean
    return mean, float(np.sqrt(var)) if var > 1e-12 else 1.0


def quantile_ids(v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Quantile bucket ids: bucket b -> b + 1, missing -> len(edges) + 2 (id 0 unused)."""
    ids = np.searchsorted(edges, v, side="right").astype(np.int32) + 1
    ids[np.isnan(v)] = edges.size + 2
    return ids


# --- 2. final arrays -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Columns:
    """The output columns, and where a field's values are in a spilled block."""

    categorical: list[FieldDef]  # the columns of x.npy
    dense: list[FieldDef]  # the columns of dense.npy
    vocab_row: dict[str, int]  # field -> row of its local ids in a block's ids
    number_row: dict[str, int]  # field -> row of its raw numbers in a block's numbers

    @classmethod
    def of(cls, p: ParsePass) -> _Columns:
        return cls(
            categorical=[f for f in p.fmt.fields if f.kind == "categorical"],
            dense=[f for f in p.fmt.fields if f.kind == "dense"],
            vocab_row={f.name: j for j, f in enumerate(p.vocab_fields)},
            number_row={f.name: j for j, f in enumerate(p.number_fields)},
        )


class _SplitFiles:
    """The spill files of one split, open for reading, and its final ``.npy`` writers."""

    def __init__(self, sink: SplitSink, d: Path, p: ParsePass, cols: _Columns, max_bag: int):
        n = sink.rows
        self.x = NpyWriter(d / "x.npy", (n, len(cols.categorical)), "int32")
        self.y = NpyWriter(d / "y.npy", (n,), "int32")
        self.dense = (
            NpyWriter(d / "dense.npy", (n, len(cols.dense)), "float32") if cols.dense else None
        )
        self.bags = (
            NpyWriter(d / "bags.npy", (n, len(p.bag_fields), max_bag), "int32")
            if p.bag_fields
            else None
        )
        self.raw_x, self.raw_y, self.raw_num = (
            sink.reader("x"),
            sink.reader("y"),
            sink.reader("num"),
        )
        self.raw_bags = {
            f.name: (sink.reader(f"{f.name}.len"), sink.reader(f"{f.name}.val"))
            for f in p.bag_fields
        }

    def close(self) -> None:
        for w in (self.x, self.y, self.dense, self.bags):
            if w is not None:
                w.close()
        pairs = self.raw_bags.values()
        for r in (self.raw_x, self.raw_y, self.raw_num, *(x for pair in pairs for x in pair)):
            if r is not None:
                r.close()


def write_splits(p: ParsePass, enc: FieldEncodings, out: Path) -> None:
    """Write the final arrays of every split into ``out/<split>/``."""
    for sink in p.sinks:
        write_split(sink, out, p, enc)


def write_split(sink: SplitSink, out: Path, p: ParsePass, enc: FieldEncodings) -> None:
    """Stream one split's spill files, block by block, into its final arrays."""
    d = out / sink.dir.name
    d.mkdir()
    cols = _Columns.of(p)
    files = _SplitFiles(sink, d, p, cols, enc.max_bag)
    nv, nn = len(p.vocab_fields), len(p.number_fields)
    for chunk, k in sink.blocks:
        prov = read_raw(files.raw_x, "int32", k * nv).reshape(nv, k)
        nums = read_raw(files.raw_num, "float64", k * nn).reshape(nn, k)
        # Field-major work on contiguous rows, one transpose into the row-major output.
        files.x.write(_final_x(p, enc, cols, chunk, prov, nums).T)
        files.y.write(read_raw(files.raw_y, "int32", k))
        if files.dense is not None:
            files.dense.write(_final_dense(enc, cols, nums).T)
        if files.bags is not None:
            files.bags.write(_final_bags(p, enc, files.raw_bags, chunk, k))
    files.close()


def _final_x(
    p: ParsePass,
    enc: FieldEncodings,
    cols: _Columns,
    chunk: int,
    prov: np.ndarray,
    nums: np.ndarray,
) -> np.ndarray:
    """Final ids of the categorical fields of a block, (fields, rows)."""
    x = np.empty((len(cols.categorical), prov.shape[1]), dtype=np.int32)

    def final_ids(j: int) -> None:
        f = cols.categorical[j]
        if f.name in cols.vocab_row:
            table = enc.vocabs[f.name].chunk_table(chunk)
            np.take(table, prov[cols.vocab_row[f.name]], out=x[j])
        else:
            x[j] = quantile_ids(nums[cols.number_row[f.name]], enc.edges[f.name])

    p.pool.run(final_ids, len(cols.categorical))
    return x


def _final_dense(enc: FieldEncodings, cols: _Columns, nums: np.ndarray) -> np.ndarray:
    """Standardised dense fields of a block (missing -> 0), (fields, rows)."""
    dense = np.empty((len(cols.dense), nums.shape[1]), dtype=np.float32)
    for j, f in enumerate(cols.dense):
        mean, std = enc.moments[f.name]
        dense[j] = np.nan_to_num((nums[cols.number_row[f.name]] - mean) / std, nan=0.0)
    return dense


def _final_bags(
    p: ParsePass,
    enc: FieldEncodings,
    raw_bags: dict[str, tuple[BinaryIO | None, BinaryIO | None]],
    chunk: int,
    k: int,
) -> np.ndarray:
    """Final ids of the multi-valued fields of a block, (rows, fields, max_bag), -1 padded."""
    bags = np.full((k, len(p.bag_fields), enc.max_bag), -1, dtype=np.int32)
    for j, f in enumerate(p.bag_fields):
        rl, rv = raw_bags[f.name]
        lengths = read_raw(rl, "int32", k).astype(np.int64)
        table = enc.vocabs[f.name].chunk_table(chunk)
        vals = table[read_raw(rv, "int32", int(lengths.sum()))]
        rows = np.repeat(np.arange(k), lengths)
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(vals.size) - np.repeat(starts, lengths)
        bags[rows, j, pos] = vals
    return bags


# --- 3. field descriptions -------------------------------------------------------------------
def write_field_meta(
    fields: list[FieldDef], enc: FieldEncodings, out: Path
) -> list[dict[str, Any]]:
    """Write ``out/vocab/<field>.json`` of every non-dense field; the meta.json field entries."""
    (out / "vocab").mkdir()
    entries = []
    for f in fields:
        entry, vocab = field_meta(f, enc)
        entries.append(entry)
        if vocab is not None:
            write_vocab_file(out, f.name, vocab)
    return entries


def write_vocab_file(out: Path, name: str, vocab: dict[str, Any]) -> None:
    """Write ``out/vocab/<name>.json`` (``vocab``: from :func:`field_meta`)."""
    (out / "vocab" / f"{name}.json").write_text(json.dumps(vocab) + "\n", encoding="utf-8")


def field_meta(f: FieldDef, enc: FieldEncodings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The meta.json entry of a field and its vocab/<field>.json (None for dense fields)."""
    if f.kind == "dense":
        mean, std = enc.moments[f.name]
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
        e = enc.edges[f.name]
        vocab.update(
            values=[str(b) for b in range(e.size + 1)] + [""],
            edges=e.tolist(),
            token_type="quantile",
        )
        entry.update(vocab_size=e.size + 3, bucketing=f.bucketing, min_count=1)
    else:
        fv = enc.vocabs[f.name]
        vocab.update(values=fv.values, token_type=fv.token_type, min_count=f.min_count)
        entry.update(vocab_size=fv.size, min_count=f.min_count)
        if f.bucketing:
            entry["bucketing"] = f.bucketing
    if f.kind == "multivalue":
        entry.update(max_len=enc.max_bag, separator=f.separator)
        vocab["separator"] = f.separator
    return entry, vocab
