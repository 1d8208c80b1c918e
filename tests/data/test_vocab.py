"""Chunk-local ids + one unification at the end give exactly the vocabulary of a plain Python
reference: ids by decreasing training count, ties in order of first appearance over all rows,
values under min-count (and values only seen outside training rows) OOV, null a token too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from autoloss.data.vocab import FieldVocab


def _chunks(rng: np.random.Generator, ints: bool) -> list[pa.Array | pa.ChunkedArray]:
    out: list[pa.Array | pa.ChunkedArray] = []
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(0, 30))
        p_null = rng.random() * 0.5
        arr: pa.Array | pa.ChunkedArray
        if ints:
            vals = [None if rng.random() < p_null else int(rng.integers(-3, 5)) for _ in range(n)]
            arr = pa.array(vals, pa.int64())
        else:
            pool = ["a", "bb", "ccc", "é", "a b", "0"]
            vals = [None if rng.random() < p_null else pool[int(rng.integers(6))] for _ in range(n)]
            arr = pa.array(vals, pa.string())
        if n > 3 and rng.random() < 0.5:  # parsed blocks arrive as chunked arrays
            cut = int(rng.integers(1, n))
            arr = pa.chunked_array([arr[:cut], arr[cut:]])
        out.append(arr)
    return out


def _reference(
    chunks: list[list[object]], masks: list[np.ndarray], min_count: int
) -> tuple[list[object], list[list[int]]]:
    first: dict[object, int] = {}
    counts: dict[object, int] = {}
    for values, mask in zip(chunks, masks):
        for v, m in zip(values, mask):
            first.setdefault(v, len(first))
            counts[v] = counts.get(v, 0) + int(m)
    kept = sorted(
        (v for v in first if counts[v] >= min_count), key=lambda v: (-counts[v], first[v])
    )
    ids = {v: i + 1 for i, v in enumerate(kept)}
    return kept, [[ids.get(v, 0) for v in values] for values in chunks]


@pytest.mark.parametrize("ints", [False, True])
def test_final_ids_match_a_python_reference(tmp_path: Path, ints: bool) -> None:
    rng = np.random.default_rng(2)
    for trial in range(60):
        vocab = FieldVocab(tmp_path / f"{ints}-{trial}")
        chunks = _chunks(rng, ints)
        masks = [rng.random(len(c)) < 0.7 for c in chunks]
        local = [vocab.local_ids(c, m) for c, m in zip(chunks, masks)]
        min_count = int(rng.integers(1, 4))
        final = vocab.finalize(min_count)
        values = [c.to_pylist() for c in chunks]
        kept, expected = _reference(values, masks, min_count)
        assert final.values == [("" if v is None else str(v)) for v in kept]
        if kept:
            assert final.token_type == ("int" if ints else "string")
        for c, (ids, want) in enumerate(zip(local, expected)):
            assert final.chunk_table(c)[ids].tolist() == want
        assert final.size == len(kept) + 1


def test_counts_only_masked_rows_and_null_keeps_its_first_appearance(tmp_path: Path) -> None:
    v = FieldVocab(tmp_path / "f")
    a = v.local_ids(pa.array([None, None], pa.string()), None)
    b = v.local_ids(pa.array(["ab", None, "cd", "ab"], pa.string()), np.array([1, 1, 0, 1], bool))
    assert a.tolist() == [0, 0] and b.tolist() == [0, 1, 2, 0]
    final = v.finalize(1)
    # null: 3 training rows, "ab": 2, "cd": only outside training rows -> OOV
    assert final.values == ["", "ab"] and final.counts.tolist() == [3, 2]
    assert final.chunk_table(1)[b].tolist() == [2, 1, 0, 2]


def test_empty_chunks_and_an_empty_field(tmp_path: Path) -> None:
    v = FieldVocab(tmp_path / "f")
    v.local_ids(pa.array([], pa.string()), None)
    ids = v.local_ids(pa.array(["x"], pa.string()), None)
    final = v.finalize(1)
    assert final.values == ["x"] and final.chunk_table(0).size == 0
    assert final.chunk_table(1)[ids].tolist() == [1]
    empty = FieldVocab(tmp_path / "g").finalize(1)
    assert empty.values == [] and empty.size == 1
