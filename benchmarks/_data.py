"""The synthetic Criteo-format data the throughput benchmarks share, made once under a work dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def synthetic_criteo(work: Path, rows: int) -> tuple[Path, Path]:
    """(raw file, prepared dataset) of ``rows`` synthetic Criteo rows, prepared with
    ``--min-count 1`` so that every value gets an id (a vocabulary of ~1M rows at 1M rows)."""
    work.mkdir(parents=True, exist_ok=True)
    raw = work / f"criteo-synth-{rows}.txt"
    data_dir = work / f"criteo-synth-{rows}-mc1"
    cli = [sys.executable, "-m", "autoloss"]
    if not raw.exists():
        subprocess.run(
            [*cli, "synth", "criteo", "--rows", str(rows), "--out", str(raw)], check=True
        )
    if not data_dir.exists():
        prepare = [*cli, "prepare", "--format", "criteo", "--input", str(raw)]
        prepare += ["--out", str(data_dir), "--min-count", "1"]
        subprocess.run(prepare, check=True, stdout=subprocess.DEVNULL)
    return raw, data_dir
