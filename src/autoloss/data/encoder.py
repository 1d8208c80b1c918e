"""Encode new raw rows exactly like a prepared dataset, with its saved vocabularies.

``RowEncoder(dataset_dir).encode_file(path)`` reads a file in the dataset's raw format (for
``csv``/``frappe``: a CSV with the same columns; the label column is optional) and returns
:class:`EncodedRows` whose ids match the dataset's: same token rules, saved vocabularies,
unseen or rare values -> 0, quantile edges and dense mean/std from the dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from autoloss.data.columns import first_bad_row
from autoloss.data.formats import (
    ChunkData,
    CsvFormat,
    CsvSchema,
    RawFormat,
    make_format,
)
from autoloss.data.prepare import DEFAULT_CHUNK_ROWS, quantile_ids
from autoloss.data.readers import BadRows, iter_chunks, printable, read_head
from autoloss.data.spec import Batch
from autoloss.data.store import EncodedDataset
from autoloss.data.vocab import lookup_ids, tokens_from_json
from autoloss.errors import DataError


@dataclass
class EncodedRows:
    """Encoded rows: the arrays of a split (``y`` is None when the input had no labels)."""

    x: np.ndarray
    y: np.ndarray | None
    dense: np.ndarray | None = None
    bags: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def batch(self) -> Batch:
        """All rows as one :class:`~autoloss.data.spec.Batch` (labels 0 when absent)."""
        y = self.y if self.y is not None else np.zeros(len(self), dtype=np.int32)
        return Batch(
            x=torch.from_numpy(self.x.astype(np.int64)),
            y=torch.from_numpy(y.astype(np.int64)),
            dense=None if self.dense is None else torch.from_numpy(self.dense),
            bags=None if self.bags is None else torch.from_numpy(self.bags.astype(np.int64)),
        )


def _format_from_meta(meta: dict[str, Any], root: Path) -> RawFormat:
    name, task, protocol = meta["format"], meta["task"], meta.get("protocol", {})
    if name == "csv":
        return CsvFormat(CsvSchema.from_dict(protocol["schema"], root / "meta.json"))
    fmt = make_format(name, task=task)
    saved = meta.get("side_data", {})
    fmt.use_side_tables({key: root / rel for key, rel in saved.items()})
    return fmt


class RowEncoder:
    """Encode raw rows with the vocabularies of the dataset at ``dataset_dir``."""

    def __init__(self, dataset_dir: str | Path) -> None:
        self.dataset = EncodedDataset(dataset_dir)
        self.meta = self.dataset.meta
        self.format = _format_from_meta(self.meta, self.dataset.path)
        self.fields = self.meta["fields"]
        self._vocab: dict[str, tuple[dict[str, Any], pa.Array | None]] = {}
        for f in self.fields:
            if f["kind"] != "dense":
                v = self.dataset.vocab(f["name"])
                values = (
                    None
                    if v.get("token_type") == "quantile"
                    else tokens_from_json(v["values"], v.get("token_type", "string"))
                )
                self._vocab[f["name"]] = (v, values)

    def encode_file(
        self,
        path: str | Path,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        labels: bool = True,
    ) -> EncodedRows:
        """Encode every row of ``path`` into one :class:`EncodedRows` (bad rows raise DataError
        with their line; an empty file too). See :meth:`iter_encoded` for the options."""
        parts = list(self.iter_encoded(path, chunk_rows=chunk_rows, labels=labels))
        if not parts:
            raise DataError("no data rows", path=Path(path))
        return EncodedRows(
            x=np.concatenate([p.x for p in parts]),
            y=None if parts[0].y is None else np.concatenate([p.y for p in parts]),  # type: ignore[misc]
            dense=None if parts[0].dense is None else np.concatenate([p.dense for p in parts]),  # type: ignore[misc]
            bags=None if parts[0].bags is None else np.concatenate([p.bags for p in parts]),  # type: ignore[misc]
        )

    def iter_encoded(
        self,
        path: str | Path,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        labels: bool = True,
    ) -> Iterator[EncodedRows]:
        """Encode ``path`` chunk by chunk (``chunk_rows`` rows each): memory holds one chunk, so a
        file of any size streams through. A bad row raises DataError with its line when its chunk
        is reached; an empty file yields nothing.

        With ``labels`` a label column, when the file has one, is read and checked (``y``);
        without, it is neither read nor checked (``predict`` ignores labels)."""
        path = Path(path)
        fmt = self.format
        fmt.check_input(path)
        names, _ = read_head(path, fmt.layout(path))
        # The label-less layout when bind found no label column (Criteo: by the column count).
        bound = fmt.bind_input(path, names, need_label=False)
        layout = bound.layout
        columns = [c for c in bound.columns if labels or c != fmt.label]
        has_label = fmt.label in columns
        expected = [f["name"] for f in self.fields]
        if [f.name for f in fmt.fields] != expected:
            raise DataError(
                f"columns do not match the dataset's fields ({', '.join(expected)})", path=path
            )
        for chunk in iter_chunks(
            path, layout, columns, chunk_rows=chunk_rows, skip_bad=False, bad=BadRows()
        ):
            data = fmt.transform(chunk.batch, has_label=has_label)
            hit = first_bad_row(data.problems)
            if hit is not None:
                idx, problem = hit
                raise DataError(
                    problem.reason,
                    path=path,
                    line=chunk.first_line + idx,
                    column=printable(problem.column),
                )
            yield self.encode_chunk(data)

    def encode_chunk(self, data: ChunkData) -> EncodedRows:
        """Encode one converted chunk (see :meth:`RawFormat.transform`)."""
        cats = [f for f in self.fields if f["kind"] == "categorical"]
        dense_f = [f for f in self.fields if f["kind"] == "dense"]
        bag_f = [f for f in self.fields if f["kind"] == "multivalue"]
        x = np.empty((data.n, len(cats)), dtype=np.int32)
        for j, f in enumerate(cats):
            vocab, values = self._vocab[f["name"]]
            if values is None:  # quantile buckets
                x[:, j] = quantile_ids(data.numbers[f["name"]], np.asarray(vocab["edges"]))
            else:
                x[:, j] = lookup_ids(data.tokens[f["name"]], values)
        dense = None
        if dense_f:
            dense = np.stack(
                [
                    np.nan_to_num((data.numbers[f["name"]] - f["mean"]) / f["std"], nan=0.0)
                    for f in dense_f
                ],
                axis=1,
            ).astype(np.float32)
        bags = None
        if bag_f:
            width = max(int(f["max_len"]) for f in bag_f)
            bags = np.full((data.n, len(bag_f), width), -1, dtype=np.int32)
            for j, f in enumerate(bag_f):
                lists = data.bags[f["name"]]
                lengths = np.asarray(pc.list_value_length(lists).fill_null(0).to_numpy(), np.int64)
                ids = lookup_ids(pc.list_flatten(lists), self._vocab[f["name"]][1])  # type: ignore[arg-type]
                starts = np.cumsum(lengths) - lengths
                pos = np.arange(ids.size) - np.repeat(starts, lengths)
                keep = pos < width  # longer bags than seen in training are truncated
                rows = np.repeat(np.arange(data.n), lengths)
                bags[rows[keep], j, pos[keep]] = ids[keep]
        return EncodedRows(x, data.y, dense, bags)
