"""Which split (train, valid, test) a row of a single input goes to.

The ``--split`` proportions, and a seeded hash of the row number that assigns each row to a
split whatever the chunk sizes (pre-split inputs do not use it: their rows keep their file's
split); or, with ``--split temporal``, the row's time compared with two cut points
(:class:`TimeCuts`, at the time quantiles of the proportions: :func:`time_cuts`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoloss.errors import ConfigError


def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"8:1:1"`` -> (8, 1, 1); ConfigError unless three finite, non-negative parts with
    train > 0 (a zero part leaves that split empty: the command line refuses it, see
    :func:`require_every_split`)."""
    try:
        parts = [float(p) for p in (text.split(":") if isinstance(text, str) else text)]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--split must look like 8:1:1, got {text!r}", column="--split") from exc
    if len(parts) != 3 or not all(math.isfinite(p) for p in parts):
        raise ConfigError(
            f"--split needs three finite numbers like 8:1:1, got {text!r}", column="--split"
        )
    if min(parts) < 0 or parts[0] <= 0:
        raise ConfigError(
            f"--split needs three non-negative parts with train > 0, got {text!r}",
            column="--split",
        )
    return parts[0], parts[1], parts[2]


def require_every_split(parts: tuple[float, float, float]) -> None:
    """ConfigError unless every part is > 0: a run needs rows to train on, to select on
    (validation) and to report (test)."""
    empty = [name for name, p in zip(("train", "valid", "test"), parts) if p <= 0]
    if empty:
        raise ConfigError(
            f"--split {':'.join(f'{p:g}' for p in parts)} leaves {' and '.join(empty)} empty; "
            "training needs rows in all three (e.g. 8:1:1)",
            column="--split",
        )


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


#: ``--split temporal`` (optionally ``temporal:8:1:1``): rows ordered by a time column.
TEMPORAL = "temporal"


def parse_split_option(text: str | Sequence[float]) -> tuple[tuple[float, float, float], bool]:
    """``--split``: (train:valid:test proportions, whether temporal). ``"8:1:1"`` is hashed per
    row; ``"temporal"`` or ``"temporal:8:1:1"`` splits by time (default proportions 8:1:1)."""
    if isinstance(text, str) and (text == TEMPORAL or text.startswith(TEMPORAL + ":")):
        rest = text[len(TEMPORAL) + 1 :]
        return (parse_split(rest) if rest else (8.0, 1.0, 1.0)), True
    return parse_split(text), False


@dataclass(frozen=True)
class TimeCuts:
    """The cut points of a temporal split: a row at or before ``train_end`` goes to train, then
    at or before ``valid_end`` to valid, later to test (ties go to the earlier split)."""

    train_end: float
    valid_end: float

    def of_times(self, t: np.ndarray) -> np.ndarray:
        """Split index (0 train, 1 valid, 2 test) of rows with times ``t`` (NaN: test)."""
        cuts = np.array([self.train_end, self.valid_end])
        return np.searchsorted(cuts, t, side="left").astype(np.uint8)

    def as_list(self) -> list[float | int]:
        return [json_time(self.train_end), json_time(self.valid_end)]


def time_cuts(times: np.ndarray, parts: tuple[float, float, float]) -> TimeCuts:
    """The cut points at the time quantiles of the cumulative proportions of ``parts``.

    The cut of a fraction q is the smallest time at or before which at least q of the rows
    lie (the lower quantile: ``sorted[ceil(q n) - 1]``), so train gets at least its share
    (more when rows tie at the cut). ``times`` holds every value, or a uniform sample of them.
    """
    ordered = np.sort(np.asarray(times, dtype=np.float64))
    n = len(ordered)
    cum = np.cumsum(parts) / sum(parts)

    def cut(q: float) -> float:
        k = int(np.ceil(q * n - 1e-9)) - 1
        return float(ordered[min(max(k, 0), n - 1)])

    return TimeCuts(cut(float(cum[0])), cut(float(cum[1])))


def json_time(v: float) -> float | int:
    """A time for meta.json: an int when whole (Unix seconds read as floats)."""
    return int(v) if float(v).is_integer() and abs(v) < 2**63 else float(v)
