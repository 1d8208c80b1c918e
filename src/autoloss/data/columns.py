"""Vectorised conversion of raw (binary) columns, reporting bad rows as masks.

Each converter returns its result plus a :class:`Problem` per kind of bad value found, so that
the caller can either raise with the first bad row's line number or skip the bad rows. The fast
path is one pyarrow cast; only when it fails do we look for the offending values, once per
*distinct* value (never per row). Inputs may be arrays or chunked arrays (a chunk's columns are
chunked: the parsed blocks are not concatenated); the fast paths keep them chunked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class Problem:
    """Rows of a chunk with one kind of bad value."""

    reason: str
    column: str
    mask: np.ndarray  # bool (n,)


def contiguous(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array (chunked arrays are concatenated)."""
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def null_mask(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if arr.null_count == 0:
        return np.zeros(len(arr), dtype=bool)
    return np.asarray(contiguous(arr.is_null()).to_numpy(zero_copy_only=False), dtype=bool)


def to_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numpy copy/view of a (chunked) array without nulls."""
    if isinstance(arr, pa.ChunkedArray):
        if arr.num_chunks == 1:
            return arr.chunk(0).to_numpy(zero_copy_only=False)
        if arr.num_chunks == 0:
            return np.zeros(0, dtype=arr.type.to_pandas_dtype())
        return np.concatenate([c.to_numpy(zero_copy_only=False) for c in arr.chunks])
    return arr.to_numpy(zero_copy_only=False)


def _bad_values(arr: pa.Array, ok) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Row mask of values for which ``ok(value) -> bool`` fails, checked once per distinct value."""
    arr = contiguous(arr)
    enc = arr.dictionary_encode()
    values = enc.dictionary.to_pylist()
    if not values:  # every value null
        return np.zeros(len(arr), dtype=bool)
    bad_unique = np.array([not ok(v) for v in values], dtype=bool)
    idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False)
    return bad_unique[idx] & ~null_mask(arr)


def _decodes(v: bytes) -> bool:
    try:
        v.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def to_text(arr: pa.Array, column: str, problems: list[Problem]) -> pa.Array:
    """binary -> utf8 string; undecodable values become null and are reported."""
    try:
        return pc.cast(arr, pa.string())
    except pa.ArrowInvalid:
        arr = contiguous(arr)
        bad = _bad_values(arr, _decodes)
        problems.append(Problem("undecodable bytes (not UTF-8)", column, bad))
        return pc.cast(pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr), pa.string())


def categorical_tokens(arr: pa.Array, column: str, problems: list[Problem]) -> pa.Array:
    """binary -> utf8 string tokens (null is a token of its own). The fast path validates the
    whole column with one cast; when that fails, UTF-8 is checked on the distinct values only,
    and rows with undecodable bytes are reported and become null (a dictionary array)."""
    try:
        return pc.cast(arr, pa.string())
    except pa.ArrowInvalid:
        pass
    enc = contiguous(arr).dictionary_encode(null_encoding="encode")
    bad_unique = np.array(
        [v is not None and not _decodes(v) for v in enc.dictionary.to_pylist()], dtype=bool
    )
    problems.append(
        Problem("undecodable bytes (not UTF-8)", column, bad_unique[enc.indices.to_numpy()])
    )
    fixed = pc.if_else(pa.array(bad_unique), pa.scalar(None, enc.dictionary.type), enc.dictionary)
    return pa.DictionaryArray.from_arrays(enc.indices, pc.cast(fixed, pa.string()))


def _is_int(v: str) -> bool:
    try:
        int(v)
    except ValueError:
        return False
    return True


def _is_float(v: str) -> bool:
    try:
        math.isfinite(float(v))
    except ValueError:
        return False
    return True


_INT64 = (-(2**63), 2**63 - 1)
_CLIP = (-9.2e18, 9.2e18)  # floats that cast to int64 (|x| < 2**63)


def _to_number(
    arr: pa.Array, column: str, problems: list[Problem], target: pa.DataType, what: str, ok
) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    try:
        # Fast path: one cast straight from the raw bytes (valid numbers are ASCII, so a
        # successful parse also means valid UTF-8).
        out = pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = _to_number_slow(arr, column, problems, target, what, ok)
    nulls = null_mask(out)
    fill = 0 if pa.types.is_integer(target) else np.nan
    return np.asarray(to_numpy(out.fill_null(fill))), nulls


def _to_number_slow(
    arr: pa.Array, column: str, problems: list[Problem], target: pa.DataType, what: str, ok
) -> pa.Array:  # type: ignore[no-untyped-def]
    """The precise path (a chunk with a bad value): report the rows, convert each distinct
    value with Python's own ``int``/``float`` (which also accept spaces, ``+5``, ``1_000``)."""
    text = to_text(contiguous(arr), column, problems)
    bad = _bad_values(text, ok)
    problems.append(Problem(f"not {what}", column, bad))
    if pa.types.is_integer(target):  # an integer, but not one int64 holds
        big = _bad_values(text, lambda v: not ok(v) or _INT64[0] <= int(v) <= _INT64[1])
        problems.append(Problem("integer out of the 64-bit range", column, big))
        bad |= big
    text = pc.if_else(pa.array(bad), pa.scalar(None, pa.string()), text)
    enc = text.dictionary_encode()
    conv = int if pa.types.is_integer(target) else float
    values = pa.array([conv(v) for v in enc.dictionary.to_pylist()], type=target)
    return values.take(enc.indices)


def to_int(arr: pa.Array, column: str, problems: list[Problem]) -> tuple[np.ndarray, np.ndarray]:
    """binary -> (int64 values with nulls as 0, null mask); non-integers are reported."""
    return _to_number(arr, column, problems, pa.int64(), "an integer", _is_int)


def to_float(arr: pa.Array, column: str, problems: list[Problem]) -> tuple[np.ndarray, np.ndarray]:
    """binary -> (float64 values with nulls as NaN, null mask); non-numbers and infinities
    (``inf``, ``1e999``) are reported (and become NaN)."""
    v, nulls = _to_number(arr, column, problems, pa.float64(), "a number", _is_float)
    infinite = np.isinf(v)
    if infinite.any():
        problems.append(Problem("not a finite number", column, infinite))
        v = np.where(infinite, np.nan, v)
    return v, nulls


def int_tokens(values: np.ndarray, nulls: np.ndarray) -> pa.Array:
    """An int64 token array; null stays null (its own token)."""
    return pa.array(values.astype(np.int64, copy=False), mask=nulls if nulls.any() else None)


def bucket(values: np.ndarray, rule: str) -> np.ndarray:
    """Bucket numbers (NaN allowed, result ignored there) into int64 tokens.

    * ``ln2``: the Criteo rule, v > 2 -> floor(ln(v)^2), else int(v) (truncation, negatives kept).
    * ``log2``: sign(v) * floor(log2(1 + |v|)): symmetric, monotone, 0 only for |v| < 1.
    """
    v = np.nan_to_num(values.astype(np.float64, copy=False), nan=0.0)
    if rule == "ln2":
        big = np.floor(np.log(np.where(v > 2, v, 3.0)) ** 2).astype(np.int64)
        # Integers keep their exact value below the threshold (no float round trip).
        # (Floats beyond the int64 range, e.g. -1e30, are clipped to it.)
        small = values if np.issubdtype(values.dtype, np.integer) else np.trunc(np.clip(v, *_CLIP))
        return np.where(v > 2, big, small).astype(np.int64)
    if rule == "log2":
        return (np.sign(v) * np.floor(np.log2(1.0 + np.abs(v)))).astype(np.int64)
    raise ValueError(f"unknown bucketing {rule!r}")


def first_bad_row(problems: list[Problem]) -> tuple[int, Problem] | None:
    """The smallest row index flagged by any problem, with that problem."""
    best: tuple[int, Problem] | None = None
    for p in problems:
        hits = np.flatnonzero(p.mask)
        if hits.size and (best is None or hits[0] < best[0]):
            best = (int(hits[0]), p)
    return best
