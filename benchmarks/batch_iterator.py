"""Rows per second of the training batch iterator over a memory-mapped split (1M rows x 39
Criteo-width fields by default): shuffled batches of 2000, one epoch, best of ``--rounds``.

    python benchmarks/batch_iterator.py [--rows 1000000] [--fields 39] [--rounds 3]

The trainer consumes at most ~100k rows/s on a CPU (docs/benchmarks.md), so the iterator must
stay far above that; this prints the figure and the machine instead of asserting it in a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from _machine import machine_info
from _table import markdown
from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedSplit


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--fields", type=int, default=39)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row: rows/s of one shuffled epoch, best and median of the rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        x = np.lib.format.open_memmap(path, "w+", np.int32, (args.rows, args.fields))
        x[:] = 7
        x.flush()
        split = EncodedSplit("train", np.load(path, mmap_mode="r"), np.zeros(args.rows, np.int32))
        it = BatchIterator(split, args.batch_size, seed=0)
        rates = []
        for r in range(args.rounds):
            start = time.perf_counter()
            rows = sum(len(b) for b in it.epoch(r))
            rates.append(rows / (time.perf_counter() - start))
    shape = f"{args.rows:,} rows x {args.fields} fields"
    return [{"split": shape, "rows/s (best)": max(rates), "rows/s (median)": median(rates)}]


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
