"""Synthetic data in the exact Criteo layout, with a planted signal.

``write_synthetic_criteo(path, rows)`` writes ``label, I1..I13, C1..C26`` tab-separated with no
header, like Criteo's ``train.txt``:

* I fields: non-negative counts (log-normal), I2 also takes -1..-3 as in the real data; each
  field has its own missing rate (empty).
* C fields: 8-character hex tokens drawn from a finite Zipf distribution per field, with
  per-field cardinalities shaped like Criteo's (a few fields allow up to 1-2 million values,
  so millions of rows show 100k+ distinct values), some fields often empty. Supports are
  capped at max(1024, 2 * rows) values, so small files are quick to write.
* Label: Bernoulli(sigmoid(logit)), logit = intercept + per-value effects of C1, C2, C3, C5,
  C6, C9 and of ln(1 + I1), ln(1 + I5) + a pairwise interaction between C2 and C5 (a rank-2
  product of per-value factors, the shape an FM term learns). About 25% positives.

Everything is generated per chunk of rows with numpy and written by pyarrow's CSV writer.
``write_synthetic_criteo_files(directory, rows, files)`` writes the same rows as ``files`` gzip
files named like Criteo 1TB's (``day_0.gz`` ... ``day_23.gz``), in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv

from autoloss.data.readers import compression_of

# Per-field cardinality (the Zipf support) and missing rate, loosely after Criteo Kaggle.
C_CARD = (
    1460, 583, 2_000_000, 800_000, 305, 24, 12_517, 633, 3, 93_145, 5_683, 1_500_000, 3_194,
    27, 14_992, 1_000_000, 10, 5_652, 2_173, 4, 1_200_000, 18, 15, 286_181, 105, 142_572,
)  # fmt: skip
C_MISSING = (
    0.0, 0.0, 0.03, 0.03, 0.0, 0.12, 0.0, 0.0, 0.0, 0.0, 0.0, 0.03, 0.0,
    0.0, 0.0, 0.03, 0.0, 0.0, 0.44, 0.44, 0.03, 0.76, 0.0, 0.03, 0.44, 0.44,
)  # fmt: skip
I_MISSING = (0.45, 0.0, 0.21, 0.22, 0.03, 0.22, 0.04, 0.0, 0.04, 0.45, 0.04, 0.77, 0.22)
I_MU = (0.5, 1.5, 2.5, 1.5, 8.0, 3.5, 1.5, 2.0, 3.5, 0.3, 1.0, 0.5, 1.5)
ZIPF_EXPONENT = 1.05
SIGNAL_FIELDS = (0, 1, 2, 4, 5, 8)  # C1, C2, C3, C5, C6, C9
INTERACTION = (1, 4)  # C2 x C5
CHUNK_ROWS = 250_000


def _hex_tokens(card: int, salt: int) -> pa.Array:
    """``card`` distinct 8-hex-digit tokens (a bijective scramble of 0..card-1)."""
    v = np.arange(card, dtype=np.uint64)
    v = (v * np.uint64(2654435761) + np.uint64(salt * 40503 + 12345)) & np.uint64(0xFFFFFFFF)
    nibbles = (v[:, None] >> (np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(4))) & np.uint64(15)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles.astype(np.int64)]
    offsets = np.arange(0, 8 * (card + 1), 8, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.string(), card, [None, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes())]
    )


class _CriteoModel:
    """The fixed generative model (vocabularies, value distributions, planted effects)."""

    def __init__(self, seed: int, rows: int) -> None:
        rng = np.random.default_rng([seed, 7919])
        # Small files need no million-value supports: cap them (keeps tests fast).
        self.card = [min(k, max(1024, 2 * rows)) for k in C_CARD]
        self.tokens = [_hex_tokens(k, i) for i, k in enumerate(self.card)]
        self.cdf = []
        for k in self.card:
            w = 1.0 / np.arange(1, k + 1, dtype=np.float64) ** ZIPF_EXPONENT
            c = np.cumsum(w)
            self.cdf.append(c / c[-1])
        self.effects = {f: rng.normal(0.0, 0.6, self.card[f]) for f in SIGNAL_FIELDS}
        a, b = INTERACTION
        self.factors = (
            rng.normal(0.0, 1.0, (self.card[a], 2)),
            rng.normal(0.0, 1.0, (self.card[b], 2)),
        )
        self.int_weights = np.array([0.35, -0.25])  # on ln(1 + I1), ln(1 + I5)

    def chunk(self, rng: np.random.Generator, n: int) -> pa.Table:
        cols: dict[str, pa.Array] = {}
        ints = []
        for i, (miss, mu) in enumerate(zip(I_MISSING, I_MU)):
            v = np.floor(rng.lognormal(mu, 1.2, n)).astype(np.int64)
            if i == 1:  # I2 has small negative values in the real data
                v = np.where(rng.random(n) < 0.05, -rng.integers(1, 4, n), v)
            ints.append(v)
            cols[f"I{i + 1}"] = pa.array(v, mask=rng.random(n) < miss)
        ids = []
        for j in range(26):
            idx = np.searchsorted(self.cdf[j], rng.random(n))
            ids.append(idx)
            missing = rng.random(n) < C_MISSING[j]
            cols[f"C{j + 1}"] = self.tokens[j].take(
                pa.array(idx, mask=missing if missing.any() else None)
            )
        logit = np.full(n, -1.2)
        for f in SIGNAL_FIELDS:
            logit += self.effects[f][ids[f]]
        a, b = INTERACTION
        logit += 0.8 * (self.factors[0][ids[a]] * self.factors[1][ids[b]]).sum(axis=1)
        logit += self.int_weights[0] * np.log1p(np.maximum(ints[0], 0))
        logit += self.int_weights[1] * np.log1p(np.maximum(ints[4], 0)) / 4
        label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        return pa.table({"label": pa.array(label), **cols})


def write_synthetic_criteo(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Write ``rows`` synthetic Criteo rows to ``path`` (``.gz``/``.bz2``/``.zst`` compress)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, _tables(seed, rows))
    return path


def criteo_file_names(files: int) -> list[str]:
    """The names of a multi-file layout like Criteo 1TB's: ``day_0.gz`` ... ``day_{files-1}.gz``."""
    return [f"day_{i}.gz" for i in range(files)]


def write_synthetic_criteo_files(
    directory: str | Path, rows: int, files: int, seed: int = 0
) -> list[Path]:
    """Write ``rows`` synthetic Criteo rows as ``files`` gzip files in ``directory``, named as
    Criteo 1TB's day files (:func:`criteo_file_names`), the first ``rows % files`` one row
    longer than the others. Read in order, they hold exactly the rows that
    :func:`write_synthetic_criteo` writes for the same ``rows`` and ``seed``."""
    if not 1 <= files <= rows:
        raise ValueError(f"files must be in 1..rows, got {files} for {rows} rows")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stream = _Stream(_tables(seed, rows))
    paths = []
    for i, name in enumerate(criteo_file_names(files)):
        n = rows // files + (1 if i < rows % files else 0)
        paths.append(_write(directory / name, stream.take(n)))
    return paths


def _tables(seed: int, rows: int) -> Iterator[pa.Table]:
    """The rows of a seed, a table of up to :data:`CHUNK_ROWS` at a time."""
    model = _CriteoModel(seed, rows)
    rng = np.random.default_rng(seed)
    for lo in range(0, rows, CHUNK_ROWS):
        yield model.chunk(rng, min(CHUNK_ROWS, rows - lo))


class _Stream:
    """Tables handed out ``n`` rows at a time (a table cut in two keeps its rest for later)."""

    def __init__(self, tables: Iterator[pa.Table]) -> None:
        self.tables = tables
        self.rest: pa.Table | None = None

    def take(self, n: int) -> Iterator[pa.Table]:
        while n > 0:
            table = self.rest if self.rest is not None else next(self.tables)
            self.rest = None
            if table.num_rows > n:
                self.rest, table = table.slice(n), table.slice(0, n)
            n -= table.num_rows
            yield table


def _write(path: Path, tables: Iterable[pa.Table]) -> Path:
    """Write the rows of ``tables`` to ``path`` in the Criteo layout, atomically (a temporary
    file beside it, renamed; compressed by the extension)."""
    options = pv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with pa.output_stream(str(tmp), compression=compression_of(path)) as sink:
            for table in tables:
                pv.write_csv(table, sink, options)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
