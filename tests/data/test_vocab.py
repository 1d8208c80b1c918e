"""The fast vocabulary lookups (dense integer table, fixed-width string keys) give exactly the
provisional ids, first-appearance order and counts of the general (hash) lookup."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from autoloss.data.vocab import FieldVocab


def _chunks(rng: np.random.Generator, ints: bool) -> list[pa.Array | pa.ChunkedArray]:
    out: list[pa.Array | pa.ChunkedArray] = []
    for _ in range(int(rng.integers(1, 6))):
        n = int(rng.integers(0, 30))
        p_null = rng.random() * 0.5
        arr: pa.Array | pa.ChunkedArray
        if ints:
            # Sometimes values too far apart for the dense table (switches to the hash lookup).
            scale = 1 << 21 if rng.random() < 0.2 else 1
            vals = [
                None if rng.random() < p_null else int(rng.integers(-3, 3)) * scale
                for _ in range(n)
            ]
            arr = pa.array(vals, pa.int64())
        else:
            # Mostly one width; sometimes another (switches to the hash lookup), or > 8 bytes.
            w = int(rng.choice([3, 3, 3, 8, 9]))
            pool = ["a" * w, "b" * w, "ab" + "c" * (w - 2), "é" + "x" * (w - 2)]
            vals = [None if rng.random() < p_null else pool[int(rng.integers(4))] for _ in range(n)]
            arr = pa.array(vals, pa.string())
        if n > 3 and rng.random() < 0.5:  # parsed blocks arrive as chunked arrays
            cut = int(rng.integers(1, n))
            arr = pa.chunked_array([arr[:cut], arr[cut:]])
        out.append(arr)
    return out


def test_fast_lookups_match_the_general_one() -> None:
    rng = np.random.default_rng(2)
    modes = set()
    for trial in range(300):
        fast, general = FieldVocab(), FieldVocab()
        general._mode = "general"
        for arr in _chunks(rng, ints=trial % 2 == 0):
            train = rng.random(len(arr)) < 0.7
            np.testing.assert_array_equal(fast.ids(arr, train), general.ids(arr, train))
        modes.add(fast._mode)
        if len(general):
            assert fast.known is not None and fast.known.equals(general.known)
            a, b = fast.finalize(1), general.finalize(1)
            assert a.values == b.values
            np.testing.assert_array_equal(a.lookup, b.lookup)
            np.testing.assert_array_equal(a.counts, b.counts)
    assert modes == {"int", "key", "general"}


def test_key_lookup_null_first_appearance() -> None:
    v = FieldVocab()
    v.ids(pa.array([None, None], pa.string()), None)
    ids = v.ids(pa.array(["ab", None, "cd", "ab"], pa.string()), np.array([1, 1, 0, 1], bool))
    assert ids.tolist() == [1, 0, 2, 1] and v._mode == "key"
    final = v.finalize(1)
    assert final.values == ["", "ab"] and final.counts.tolist() == [3, 2]
