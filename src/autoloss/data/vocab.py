"""Growing per-field vocabularies: provisional ids while streaming, final ids after.

While the input streams, every distinct token of a field gets a *provisional* id in order of
first appearance and its count among training rows is accumulated with ``np.bincount``. After
the pass, :meth:`FieldVocab.finalize` keeps the tokens seen at least ``min_count`` times in
training rows, orders them by decreasing count (ties: first appearance) as ids ``1..``, sends
everything else to the OOV id 0, and returns the provisional -> final lookup table, applied to
the stored provisional ids with one vectorised ``take`` per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _token_type(arr: pa.Array) -> str:
    return "int" if pa.types.is_integer(arr.type) else "string"


class FieldVocab:
    """Provisional ids and training counts of one field's tokens (null is a token too)."""

    def __init__(self) -> None:
        self.known: pa.Array | None = None
        self.counts = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return 0 if self.known is None else len(self.known)

    def ids(self, tokens: pa.Array, count_mask: np.ndarray | None) -> np.ndarray:
        """Provisional int32 ids of ``tokens``; rows where ``count_mask`` is True are counted."""
        if isinstance(tokens, pa.ChunkedArray):
            tokens = tokens.combine_chunks()
        enc = (
            tokens
            if isinstance(tokens, pa.DictionaryArray)
            else tokens.dictionary_encode(null_encoding="encode")
        )
        uniques = enc.dictionary
        if self.known is None:
            pos = np.full(len(uniques), -1, dtype=np.int64)
        else:
            found = pc.index_in(uniques, value_set=self.known, skip_nulls=False)
            pos = np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        new = pos < 0
        if new.any():
            start = len(self)
            pos[new] = np.arange(start, start + int(new.sum()))
            added = uniques.filter(pa.array(new))
            self.known = added if self.known is None else pa.concat_arrays([self.known, added])
        prov = pos.astype(np.int32)[enc.indices.to_numpy(zero_copy_only=False)]
        total = len(self)
        if self.counts.size < total:
            self.counts = np.concatenate(
                [self.counts, np.zeros(total - self.counts.size, np.int64)]
            )
        if count_mask is None:
            self.counts += np.bincount(prov, minlength=total)
        elif count_mask.any():
            self.counts += np.bincount(prov[count_mask], minlength=total)
        return prov

    def finalize(self, min_count: int) -> FinalVocab:
        keep = np.flatnonzero(self.counts >= max(1, min_count))
        # Stable sort on -count: ties keep first-appearance order.
        keep = keep[np.argsort(-self.counts[keep], kind="stable")]
        lookup = np.zeros(max(1, len(self)), dtype=np.int32)
        lookup[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
        if self.known is None:
            return FinalVocab(lookup, [], np.zeros(0, np.int64), "string")
        values = self.known.take(pa.array(keep))
        return FinalVocab(lookup, tokens_to_json(values), self.counts[keep], _token_type(values))


@dataclass
class FinalVocab:
    """The kept tokens of a field: ``values[i - 1]`` has id ``i``; ``lookup[provisional] = id``."""

    lookup: np.ndarray
    values: list[str]
    counts: np.ndarray
    token_type: str

    @property
    def size(self) -> int:
        """Vocabulary size including the OOV id 0."""
        return len(self.values) + 1


def tokens_to_json(values: pa.Array) -> list[str]:
    """Tokens as JSON strings: ints as decimal text, the null (empty) token as ``""``."""
    return [("" if v is None else str(v)) for v in values.to_pylist()]


def tokens_from_json(values: list[Any], token_type: str) -> pa.Array:
    """Inverse of :func:`tokens_to_json` (``""`` is the null token)."""
    if token_type == "int":
        return pa.array([None if v == "" else int(v) for v in values], type=pa.int64())
    return pa.array([None if v == "" else str(v) for v in values], type=pa.string())


def lookup_ids(tokens: pa.Array, vocab_values: pa.Array) -> np.ndarray:
    """Final int32 ids of ``tokens`` against a saved vocabulary (unseen -> 0)."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    if isinstance(tokens, pa.DictionaryArray):
        # Look up the distinct values once, then index by row.
        per_value = lookup_ids(tokens.dictionary, vocab_values)
        return per_value[tokens.indices.to_numpy(zero_copy_only=False)]
    if len(vocab_values) == 0:
        return np.zeros(len(tokens), dtype=np.int32)
    if tokens.type != vocab_values.type:
        tokens = pc.cast(tokens, vocab_values.type)
    pos = pc.index_in(tokens, value_set=vocab_values, skip_nulls=False)
    return (np.asarray(pos.fill_null(-1).to_numpy(zero_copy_only=False)) + 1).astype(np.int32)
