"""``--split temporal``: the cut points, from a first cheap pass over the time column only.

Train on the past, validate and test on the future: the cut points are the time quantiles of
the ``--split`` proportions over the whole input (:func:`~autoloss.data.splits.time_cuts`),
and the parse pass then sends each row to the split of its time
(:class:`~autoloss.data.splits.TimeCuts`), whatever the chunk sizes.

The quantiles come from every time value when there are at most
:data:`~autoloss.data.parse_pass.QUANTILE_SAMPLE` of them, else from a uniform sample of that
many (bottom-k by seeded random keys, like the quantile bucketing: the sample does not depend
on the chunk sizes), so memory stays bounded. Values that are not numbers are left out here;
the parse pass reports their rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from autoloss.data.columns import to_float
from autoloss.data.formats import RawFormat
from autoloss.data.parse_pass import NumberStats, PassInput, PassOptions
from autoloss.data.readers import BadRows, iter_chunks
from autoloss.data.splits import TimeCuts, json_time, time_cuts
from autoloss.errors import DataError


def scan_time_cuts(
    fmt: RawFormat, inputs: Sequence[PassInput], opts: PassOptions
) -> tuple[TimeCuts, dict[str, Any]]:
    """Read the time column of every input; the cut points and their description (meta)."""
    column = fmt.time_column
    assert column is not None and fmt.use_time
    stats = NumberStats()
    rng = np.random.default_rng(np.random.SeedSequence([zlib.crc32(b"temporal"), opts.seed]))
    for inp in inputs:
        b = inp.bound
        # Rows with the wrong number of columns: counted by the parse pass, not here.
        for chunk in iter_chunks(
            b.path,
            b.layout,
            [column],
            chunk_rows=opts.chunk_rows,
            skip_bad=opts.skip_bad,
            bad=BadRows(),
        ):
            stats.add(to_float(chunk.batch.column(column), column, [])[0], rng)
    if stats.count == 0:
        raise DataError(
            f"no numeric value in the time column {column!r} (--split temporal)",
            path=inputs[0].bound.path,
        )
    cuts = time_cuts(stats.sample, opts.parts)
    return cuts, describe(column, cuts, stats.count, len(stats.sample))


def describe(column: str, cuts: TimeCuts, values: int, used: int) -> dict[str, Any]:
    """The ``protocol.temporal`` entry of meta.json (the time ranges are added after the pass)."""
    return {
        "time_column": column,
        "cuts": cuts.as_list(),
        "rule": "time <= cuts[0]: train; <= cuts[1]: valid; later: test (ties: earlier split)",
        "quantiles_of": "every time value"
        if used == values
        else f"a uniform sample of {used:,} of the {values:,} time values",
    }


def time_ranges(ranges: dict[str, list[float]]) -> dict[str, list[float | int]]:
    """Each split's first and last time, as meta.json numbers."""
    return {name: [json_time(lo), json_time(hi)] for name, (lo, hi) in ranges.items()}
