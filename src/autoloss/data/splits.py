"""Which split (train, valid, test) a row of a single input goes to.

The ``--split`` proportions, and a seeded hash of the row number that assigns each row to a
split whatever the chunk sizes (pre-split inputs do not use it: their rows keep their file's
split).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoloss.errors import ConfigError


def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"8:1:1"`` -> (8, 1, 1); ConfigError unless three non-negative parts with train > 0."""
    try:
        parts = [float(p) for p in (text.split(":") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(f"--split must look like 8:1:1, got {text!r}", column="--split") from exc
    if len(parts) != 3 or min(parts) < 0 or parts[0] <= 0:
        raise ConfigError(
            f"--split needs three non-negative parts with train > 0, got {text!r}",
            column="--split",
        )
    return parts[0], parts[1], parts[2]


def split_of_rows(start: int, n: int, seed: int, parts: tuple[float, float, float]) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) of rows ``start .. start+n-1``.

    A splitmix64 hash of (seed, row number) gives each row a uniform number in [0, 1), compared
    with the cumulative fractions: deterministic for a seed and file, independent of chunking.
    """
    mask = (1 << 64) - 1
    s = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & mask
    z = np.arange(start, start + n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = z + np.uint64(s)
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    u = (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    cum = np.cumsum(parts) / sum(parts)
    return np.minimum(np.searchsorted(cum[:2], u, side="right"), 2).astype(np.uint8)
