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


# Integer tokens whose values span at most this many consecutive integers are looked up in a
# dense table (value - lo -> provisional id) instead of a hash table.
_DENSE_SPAN = 1 << 20


class FieldVocab:
    """Provisional ids and training counts of one field's tokens (null is a token too).

    Provisional ids follow the order of first appearance in the stream. Three lookups, chosen by
    the first chunk and kept while they apply (else the general one takes over for good):

    * ``int``: integer tokens in a dense table over their value range (bucketed numbers);
    * ``key``: strings of one fixed width of at most 8 bytes (e.g. Criteo's hex tokens) as
      ``uint64`` keys, an exact packing of their bytes (no hash collisions);
    * ``general``: ``dictionary_encode`` of the chunk + ``index_in`` against the known values.
    """

    def __init__(self) -> None:
        self.known: pa.Array | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self._mode: str | None = None
        self._null_id = -1
        # int mode: table[value - lo] = provisional id or -1
        self._lo = 0
        self._table = np.zeros(0, dtype=np.int32)
        # key mode: the width of the tokens and the keys of the known values in id order
        self._width = 0
        self._keys = np.zeros(0, dtype=np.uint64)
        self._key_prov = np.zeros(0, dtype=np.int32)  # provisional id of each key

    def __len__(self) -> int:
        return 0 if self.known is None else len(self.known)

    def ids(self, tokens: pa.Array, count_mask: np.ndarray | None) -> np.ndarray:
        """Provisional int32 ids of ``tokens``; rows where ``count_mask`` is True are counted."""
        if self._mode is None:
            t = tokens.type
            if pa.types.is_integer(t):
                self._mode = "int"
            elif pa.types.is_string(t) or pa.types.is_binary(t):
                self._mode = "key"
            else:
                self._mode = "general"
        prov = None
        if self._mode != "key" and isinstance(tokens, pa.ChunkedArray):
            tokens = tokens.combine_chunks()
        if self._mode == "int" and pa.types.is_integer(tokens.type):
            prov = self._int_ids(tokens)
        elif self._mode == "key" and (
            pa.types.is_string(tokens.type) or pa.types.is_binary(tokens.type)
        ):
            prov = self._key_ids(tokens, count_mask)
            if prov is not None:
                return prov
        if prov is None:
            self._mode = "general"
            if isinstance(tokens, pa.ChunkedArray):
                tokens = tokens.combine_chunks()
            return self._general_ids(tokens, count_mask)
        total = self._grow_counts()
        if count_mask is None or count_mask.all():
            self.counts[:total] += np.bincount(prov, minlength=total)
        elif count_mask.any():
            self.counts[:total] += np.bincount(prov[count_mask], minlength=total)
        return prov

    def _grow_counts(self) -> int:
        total = len(self)
        if self.counts.size < total:
            grown = np.zeros(max(total, 2 * self.counts.size), np.int64)
            grown[: self.counts.size] = self.counts
            self.counts = grown
        return total

    def _append(self, values: pa.Array) -> None:
        self.known = values if self.known is None else pa.concat_arrays([self.known, values])

    def _new_ids(self, n: int) -> np.ndarray:
        return np.arange(len(self), len(self) + n, dtype=np.int32)

    def _general_ids(self, tokens: pa.Array, count_mask: np.ndarray | None) -> np.ndarray:
        enc = (
            tokens
            if isinstance(tokens, pa.DictionaryArray)
            else tokens.dictionary_encode(null_encoding="encode")
        )
        uniques = enc.dictionary
        if self.known is not None and uniques.type != self.known.type:
            uniques = pc.cast(uniques, self.known.type)
        if self.known is None:
            pos = np.full(len(uniques), -1, dtype=np.int32)
        else:
            found = pc.index_in(uniques, value_set=self.known, skip_nulls=False)
            pos = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        new = pos < 0
        if new.any():
            pos[new] = self._new_ids(int(new.sum()))
            self._append(uniques.filter(pa.array(new)))
        local = np.asarray(enc.indices.to_numpy(zero_copy_only=False))
        # Count per distinct value of the chunk (O(rows + distinct), not O(vocabulary)).
        self._grow_counts()
        if count_mask is None or count_mask.all():
            self.counts[pos] += np.bincount(local, minlength=pos.size)
        elif count_mask.any():
            self.counts[pos] += np.bincount(local[count_mask], minlength=pos.size)
        return pos[local]

    def _int_ids(self, tokens: pa.Array) -> np.ndarray | None:
        nulls = _nulls(tokens)
        v = np.asarray(tokens.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        valid = v[~nulls] if nulls.any() else v
        if valid.size:
            lo, hi = int(valid.min()), int(valid.max())
            if self._table.size:
                lo, hi = min(lo, self._lo), max(hi, self._lo + self._table.size - 1)
            if hi - lo >= _DENSE_SPAN:
                return None
            if not self._table.size or lo < self._lo or hi >= self._lo + self._table.size:
                table = np.full(hi - lo + 1, -1, dtype=np.int32)
                if self._table.size:
                    table[self._lo - lo : self._lo - lo + self._table.size] = self._table
                self._table, self._lo = table, lo
        idx = v - self._lo
        if nulls.any():
            idx[nulls] = -1
        prov = self._lookup_int(idx, nulls)
        unknown = prov < 0
        if unknown.any():
            rows = np.flatnonzero(unknown)
            # First row of each new value (slot 0: the null token), in order of appearance.
            first = np.full(self._table.size + 1, len(tokens), dtype=np.int64)
            np.minimum.at(first, idx[rows] + 1, rows)
            slots = np.flatnonzero(first < len(tokens))
            first_rows = np.sort(first[slots])
            keys = idx[first_rows]
            ids = self._new_ids(keys.size)
            isnull = keys < 0
            self._table[keys[~isnull]] = ids[~isnull]
            if isnull.any():
                self._null_id = int(ids[isnull][0])
            self._append(tokens.take(pa.array(first_rows)))
            prov[rows] = self._lookup_int(idx[rows], nulls[rows])
        return prov

    def _lookup_int(self, idx: np.ndarray, nulls: np.ndarray) -> np.ndarray:
        if not self._table.size:
            return np.full(idx.size, self._null_id, dtype=np.int32)
        prov = self._table[np.maximum(idx, 0)]
        if nulls.any():
            prov[nulls] = self._null_id
        return prov

    def _key_ids(self, tokens: pa.Array, count_mask: np.ndarray | None) -> np.ndarray | None:
        packed = _fixed_width_keys(tokens, self._width)
        if packed is None:
            return None
        keys, nulls, width = packed
        self._width = width or self._width
        prov = np.full(len(tokens), self._null_id, dtype=np.int32)
        present = ~nulls
        if keys.size:
            enc = pa.array(keys).dictionary_encode()
            uniq = np.asarray(enc.dictionary.to_numpy(zero_copy_only=False), dtype=np.uint64)
            local = np.asarray(enc.indices.to_numpy(zero_copy_only=False))
            if self._keys.size:
                found = pc.index_in(pa.array(uniq), value_set=pa.array(self._keys))
                at = found.fill_null(-1).to_numpy(zero_copy_only=False)
                pos = np.where(at >= 0, self._key_prov[at], -1).astype(np.int32)
            else:
                pos = np.full(uniq.size, -1, dtype=np.int32)
            new = pos < 0
        else:
            uniq, local, pos, new = (
                np.zeros(0, np.uint64),
                np.zeros(0, np.int64),
                np.zeros(0, np.int32),
                np.zeros(0, bool),
            )
        null_new = self._null_id < 0 and bool(nulls.any())
        if new.any() or null_new:
            # New values in order of first appearance (the dictionary's order); a new null
            # token takes its place among them by the row where it first appears.
            n_new = int(new.sum())
            slot = n_new
            if null_new:
                if n_new:
                    first = np.full(uniq.size, local.size, dtype=np.int64)
                    np.minimum.at(first, local, np.arange(local.size))
                    first_rows = np.flatnonzero(present)[first[new]]
                    slot = int(np.searchsorted(first_rows, int(np.argmax(nulls))))
                else:
                    slot = 0
            ids = self._new_ids(n_new + int(null_new))
            value_ids = np.delete(ids, slot) if null_new else ids
            pos[new] = value_ids
            self._keys = np.concatenate([self._keys, uniq[new]])
            self._key_prov = np.concatenate([self._key_prov, value_ids])
            values = _keys_to_array(uniq[new], self._width, tokens.type)
            if null_new:
                self._null_id = int(ids[slot])
                none = pa.nulls(1, tokens.type)
                values = pa.concat_arrays([values[:slot], none, values[slot:]])
                prov[nulls] = self._null_id
            self._append(values)
        if keys.size:
            if present.all():
                prov = pos[local]
            else:
                prov[present] = pos[local]
        # Count per distinct value of the chunk (O(rows + distinct), not O(vocabulary)).
        self._grow_counts()
        if count_mask is not None and keys.size and not present.all():
            counted = count_mask[present]
        else:
            counted = count_mask
        if keys.size:
            if counted is None or counted.all():
                self.counts[pos] += np.bincount(local, minlength=pos.size)
            elif counted.any():
                self.counts[pos] += np.bincount(local[counted], minlength=pos.size)
        if self._null_id >= 0 and nulls.any():
            self.counts[self._null_id] += int(
                nulls.sum() if count_mask is None else (nulls & count_mask).sum()
            )
        return prov

    def finalize(self, min_count: int) -> FinalVocab:
        self.counts = self.counts[: len(self)]
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


def _nulls(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed_width_keys(
    arr: pa.Array | pa.ChunkedArray, width: int
) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(uint64 keys of the non-null values, null mask, width) when every non-null value of
    ``arr`` (string/binary) has the same length of 1 to 8 bytes (and ``width`` if set); the key
    is the value's bytes, zero-padded: exact, since the width is fixed. None otherwise."""
    if not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
        return None
    if isinstance(arr, pa.Array):
        return _chunk_keys(arr, width)
    keys, nulls = [], []
    for chunk in arr.chunks:
        got = _chunk_keys(chunk, width)
        if got is None:
            return None
        keys.append(got[0])
        nulls.append(got[1])
        width = width or got[2]
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, bool), width
    return np.concatenate(keys), np.concatenate(nulls), width


def _chunk_keys(arr: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    lengths = offsets[1:] - offsets[:-1]
    if arr.null_count:
        bits = np.unpackbits(np.frombuffer(bufs[0], dtype=np.uint8), bitorder="little")
        valid = bits[arr.offset : arr.offset + n].astype(bool)
    else:
        valid = np.ones(n, dtype=bool)
    m = n - arr.null_count
    if m == 0:
        return (np.zeros(0, np.uint64), ~valid, width) if not lengths.any() else None
    w = int(offsets[-1] - offsets[0]) // m
    # Every value has exactly w bytes, every null none.
    if not 1 <= w <= 8 or (width and w != width) or not (lengths == valid * w).all():
        return None
    data = np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0] : offsets[-1]].reshape(-1, w)
    if w < 8:
        padded = np.zeros((m, 8), dtype=np.uint8)
        padded[:, :w] = data
        data = padded
    return np.ascontiguousarray(data).view("<u8").ravel(), ~valid, w


def _keys_to_array(keys: np.ndarray, width: int, type: pa.DataType) -> pa.Array:
    """The string/binary values packed in ``keys`` (see :func:`_fixed_width_keys`)."""
    if keys.size == 0:
        return pa.array([], type=type)
    data = np.ascontiguousarray(keys.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :width])
    offsets = np.arange(0, (keys.size + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(
        type, keys.size, [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())]
    )


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
