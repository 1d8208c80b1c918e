"""What the benchmarks that train through the command line share: one ``autoloss train`` run in
its own process, read back instead of trained again when it has finished, and mean ± std."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path


def train_cached(out: Path, options: list[str]) -> dict:
    """``autoloss train OPTIONS --out OUT`` unless OUT holds a finished run; its result.json."""
    result = out / "result.json"
    if not result.exists():
        cmd = [sys.executable, "-m", "autoloss.cli", "train", *options]
        cmd += ["--progress", "off", "--out", str(out), "--overwrite"]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def mean_sd(values: list[float], digits: int = 4) -> str:
    """``mean ± sample std`` (std 0 for one value)."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"
