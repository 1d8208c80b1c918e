"""Benchmark ``autoloss prepare --format criteo`` against a bare pandas parse.

For synthetic Criteo files of 1M and 4M rows (generated once, cached in ``bench-out/``):

* pandas: ``pandas.read_csv(path, sep="\\t", header=None)`` alone, timed inside a fresh
  subprocess (import time excluded);
* reader: prepare's own streaming reader (pyarrow, every column as binary) iterated over the
  file with nothing else done: the floor under any prepare built on it;
* prepare: ``python -m autoloss prepare --format criteo`` in a fresh subprocess: its own
  reported seconds (meta.json, import time excluded), the wall time of the command, and the
  peak RSS and CPU seconds (user + system, all threads) of that subprocess
  (``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper per run).

Targets: prepare <= 1.5 x the pandas parse; peak RSS at 4M rows within 25% of 1M rows.

    .venv/bin/python benchmarks/prepare.py [--rows 1000000 4000000] [--out bench-out]
        [--repeat N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _table import markdown  # type: ignore[import-not-found]

# Runs `argv` as a child and reports its wall time and peak RSS (a fresh process per
# measurement, so RUSAGE_CHILDREN sees exactly one child).
_WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc, "wall": time.perf_counter() - t, "cpu": r.ru_utime + r.ru_stime,
                  "maxrss_mb": r.ru_maxrss / 1024}))
"""

_PANDAS = """
import sys, time, pandas as pd
t = time.perf_counter()
df = pd.read_csv(sys.argv[1], sep="\\t", header=None)
print(time.perf_counter() - t, len(df))
"""

_READER = """
import sys, time
from pathlib import Path
from autoloss.data.formats import make_format
from autoloss.data.readers import BadRows, iter_chunks, read_head
path = Path(sys.argv[1])
fmt = make_format("criteo")
layout = fmt.layout(path)
cols = fmt.bind(path, read_head(path, layout)[0], need_label=True)
t = time.perf_counter()
n = sum(c.batch.num_rows for c in iter_chunks(path, layout, cols, chunk_rows=262144,
                                               skip_bad=False, bad=BadRows()))
print(time.perf_counter() - t, n)
"""


def machine_info() -> dict[str, object]:
    import numpy
    import pyarrow

    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "-"
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(ram, 1),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "torch": torch_version,
        "load_avg": os.getloadavg(),
    }


def measure_command(argv: list[str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *argv], capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"command failed: {' '.join(argv)}")
    return result


def script_seconds(script: str, path: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[0])


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--out", type=Path, default=Path("bench-out"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement (best kept)")
    ap.add_argument("--workers", type=int, default=0, help="prepare --workers (0: one per core)")
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per file size: pandas, the reader alone and prepare (seconds, RSS, CPU)."""
    from autoloss.data.synth import write_synthetic_criteo

    args.out.mkdir(parents=True, exist_ok=True)
    rows_out: list[dict[str, object]] = []
    for rows in args.rows:
        path = args.out / f"criteo-synth-{rows}.txt"
        if not path.exists():
            t = time.perf_counter()
            write_synthetic_criteo(path, rows, seed=0)
            print(f"generated {path} in {time.perf_counter() - t:.1f} s")
        size_mb = path.stat().st_size / 2**20
        pandas = min(script_seconds(_PANDAS, path) for _ in range(args.repeat))
        reader = min(script_seconds(_READER, path) for _ in range(args.repeat))
        dest = args.out / f"prepared-{rows}"
        cmd = [sys.executable, "-m", "autoloss", "prepare", "--format", "criteo"]
        cmd += ["--input", str(path), "--out", str(dest), "--overwrite"]
        cmd += ["--workers", str(args.workers)]
        runs = []
        for _ in range(args.repeat):
            m = measure_command(cmd)
            m["seconds"] = json.loads((dest / "meta.json").read_text())["seconds"]
            runs.append(m)
        best = min(runs, key=lambda r: r["seconds"])
        rows_out.append({
            "rows": rows, "MiB": size_mb, "pandas parse s": pandas, "reader alone s": reader,
            "prepare s": best["seconds"], "prepare rows/s": rows / best["seconds"],
            "command wall s": best["wall"], "CPU s": best["cpu"],
            "prepare / pandas": best["seconds"] / pandas, "peak RSS MiB": best["maxrss_mb"],
        })  # fmt: skip
    return rows_out


def main() -> None:
    args = parser().parse_args()
    print("machine:", json.dumps(machine_info()))
    rows = measure(args)
    print(markdown(rows))
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        growth = float(large["peak RSS MiB"]) / float(small["peak RSS MiB"]) - 1  # type: ignore[arg-type]
        print(f"peak RSS {large['rows']:,} vs {small['rows']:,} rows: {growth:+.1%}")


if __name__ == "__main__":
    main()
