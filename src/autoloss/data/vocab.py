"""Per-field vocabularies, built in two steps so that no step costs more as the vocabulary grows.

*During the pass*, each chunk of a field is dictionary-encoded on its own (one hash per row): its
rows get **chunk-local ids**, the position of their value in the chunk's dictionary, which lists
the chunk's distinct values in order of first appearance. The dictionary and the training-row
count of each of its values are appended to the field's spill files; nothing in memory grows.

*After the pass*, :meth:`FieldVocab.finalize` reads the field's chunk dictionaries back and
dictionary-encodes their concatenation once: every distinct value of the field gets a position
in order of first appearance in the whole stream, and the per-chunk counts are summed per value.
Values seen at least ``min_count`` times in training rows are kept, ordered by decreasing count
(ties: first appearance) as ids ``1..``; everything else is the OOV id 0. The result maps each
chunk's local ids to final ids (:meth:`FinalVocab.chunk_table`), applied with one ``take`` per
field and chunk when the final arrays are written.

(An earlier design gave rows global provisional ids while streaming, which needs a lookup of each
chunk's distinct values in the growing vocabulary: pyarrow rebuilds that hash set on every call,
so the cost per chunk grew with the vocabulary; this one hashes each row once and each chunk's
distinct values once more at the end.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from autoloss.errors import DataError


def _token_type(arr: pa.Array) -> str:
    return "int" if pa.types.is_integer(arr.type) else "string"


class FieldVocab:
    """Chunk-local ids while streaming; the final vocabulary after (see the module docstring).

    ``root`` is a directory of this field's own (created if missing): its spill files live there.
    Every chunk of the stream must go through :meth:`local_ids` exactly once and in order (an
    empty chunk too), since chunks are numbered by call.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sizes: list[int] = []  # distinct values of each chunk
        self._segments: list[int] = []  # bytes of each spilled (non-empty) chunk dictionary
        self._type: pa.DataType | None = None
        # Files are opened per append, never held: a dataset may have more fields than a
        # process may keep files open.
        self._values_path = self.root / "values.arrow"
        self._counts_path = self.root / "counts.bin"
        self._counts_path.write_bytes(b"")

    def local_ids(
        self, tokens: pa.Array | pa.ChunkedArray, count_mask: np.ndarray | None
    ) -> np.ndarray:
        """Chunk-local int32 ids of ``tokens`` (null is a token too); the rows where
        ``count_mask`` is True (all if None) are counted."""
        if isinstance(tokens, pa.DictionaryArray):  # may hold duplicate values: encode afresh
            tokens = tokens.dictionary_decode()
        local, values = encode_values(tokens)
        if count_mask is None or count_mask.all():
            counts = np.bincount(local, minlength=len(values))
        else:
            counts = np.bincount(local[count_mask], minlength=len(values))
        self._spill(values, counts)
        return local

    def _spill(self, values: pa.Array, counts: np.ndarray) -> None:
        """Append the chunk's dictionary (one self-contained Arrow IPC stream per chunk) and
        its counts to the field's files."""
        if self._type is None and values.type != pa.null():
            self._type = values.type
        if self._type is not None and values.type != self._type:
            try:
                values = pc.cast(values, self._type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataError(
                    f"tokens of one field changed type ({self._type} then {values.type})"
                ) from exc
        if len(values):
            out = pa.BufferOutputStream()
            batch = pa.record_batch([values], names=["v"])
            with pa.ipc.new_stream(out, batch.schema) as writer:
                writer.write_batch(batch)
            data = out.getvalue()
            with self._values_path.open("ab") as f:
                f.write(memoryview(data))
            self._segments.append(data.size)
        with self._counts_path.open("ab") as f:
            f.write(np.ascontiguousarray(counts, dtype=np.int64).data)
        self.sizes.append(len(values))

    def _values(self) -> pa.ChunkedArray:
        """Every chunk's dictionary, in chunk order (memory-mapped, not copied)."""
        if not self._segments:
            return pa.chunked_array([], type=self._type or pa.string())
        source = pa.memory_map(str(self._values_path))
        whole = source.read_buffer()
        arrays: list[pa.Array] = []
        start = 0
        for size in self._segments:
            reader = pa.ipc.open_stream(pa.BufferReader(whole.slice(start, size)))
            arrays.extend(b.column(0) for b in reader)
            start += size
        return pa.chunked_array(arrays, type=self._type)

    def finalize(self, min_count: int) -> FinalVocab:
        """The final vocabulary, and the final id of every chunk-local id (kept on disk)."""
        values = self._values()
        counts_per_local = np.fromfile(self._counts_path, dtype=np.int64)
        assert counts_per_local.size == sum(self.sizes) == len(values)
        position, distinct = encode_values(values)
        counts, keep, final_of_value = rank_values(
            position, counts_per_local, len(distinct), min_count
        )
        table_path = self.root / "final_ids.bin"
        final_of_value[position].astype(np.int32).tofile(table_path)
        del values, position
        offsets = np.concatenate([[0], np.cumsum(self.sizes, dtype=np.int64)])
        return final_vocab(distinct, counts, keep, table_path, offsets)

    @property
    def value_type(self) -> pa.DataType | None:
        """The type of the field's tokens (the first chunk's that is not null-typed), if any."""
        return self._type

    def dictionaries(self) -> pa.ChunkedArray:
        """Every chunk's dictionary (its distinct values in order of first appearance), in
        chunk order, memory-mapped."""
        return self._values()


def rank_values(
    position: np.ndarray, counts_per_local: np.ndarray, distinct: int, min_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count of each distinct value, the kept values ordered by id, the final id of each
    distinct value): the counts of the entries of ``position`` (the distinct value of each
    counted entry) summed per value; values counted at least ``min_count`` times kept, by
    decreasing count, ties in order of first appearance (the order of the distinct values);
    the others get the OOV id 0."""
    # float64 weights count exactly up to 2**53
    summed = np.bincount(position, weights=counts_per_local, minlength=distinct)
    counts = np.rint(summed).astype(np.int64)
    keep = np.flatnonzero(counts >= max(1, min_count))
    # Stable sort on -count: ties keep first-appearance order.
    keep = keep[np.argsort(-counts[keep], kind="stable")]
    final_of_value = np.zeros(max(1, distinct), dtype=np.int32)
    final_of_value[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return counts, keep, final_of_value


def final_vocab(
    distinct: pa.Array, counts: np.ndarray, keep: np.ndarray, table_path: Path, offsets: np.ndarray
) -> FinalVocab:
    """The :class:`FinalVocab` of the kept values (:func:`rank_values`) of ``distinct``."""
    kept = distinct.take(pa.array(keep, type=pa.int64()))
    return FinalVocab(
        values=tokens_to_json(kept),
        counts=counts[keep],
        token_type=_token_type(kept) if len(distinct) else "string",
        table_path=table_path,
        offsets=offsets,
    )


def encode_values(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """(int32 index of each value in the dictionary, the dictionary: the distinct values in
    order of first appearance, null included). A chunked array is encoded without concatenating
    it: pyarrow keeps one memo table across its chunks, so they share the final dictionary."""
    enc = values.dictionary_encode(null_encoding="encode")
    if isinstance(enc, pa.Array):
        return np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int32), enc.dictionary
    if enc.num_chunks == 0:
        return np.zeros(0, np.int32), pa.array([], type=values.type)
    index = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in enc.chunks])
    return index.astype(np.int32, copy=False), enc.chunk(enc.num_chunks - 1).dictionary


@dataclass
class FinalVocab:
    """The kept tokens of a field (``values[i - 1]`` has id ``i``) and, for every chunk of the
    pass, the final id of each of its chunk-local ids."""

    values: list[str]
    counts: np.ndarray
    token_type: str
    table_path: Path  # int32 final ids of every chunk's local ids, chunks concatenated
    offsets: np.ndarray  # chunk c's local ids are entries offsets[c] .. offsets[c + 1] - 1

    @property
    def size(self) -> int:
        """Vocabulary size including the OOV id 0."""
        return len(self.values) + 1

    def chunk_table(self, chunk: int) -> np.ndarray:
        """Final id of each local id of chunk ``chunk`` (read from disk: the tables of all
        chunks and fields together can be large, and only one chunk's is needed at a time)."""
        start, stop = int(self.offsets[chunk]), int(self.offsets[chunk + 1])
        if stop == start:
            return np.zeros(0, dtype=np.int32)
        return np.fromfile(self.table_path, dtype=np.int32, count=stop - start, offset=4 * start)


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
