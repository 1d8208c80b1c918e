"""Benchmark ``prepare`` over many input files: serially, as a map-reduce in this process, on Ray.

A synthetic Criteo layout of ``--files`` gzip day files (``autoloss synth criteo --files``,
made once under ``--out``) is prepared

* serially (``--executor local``: one process reads the files one after the other, the fields
  of a chunk on one thread per core);
* as the map-reduce of ``--executor ray`` with its tasks run one after the other in this
  process (``SerialTasks``): what cutting the work into tasks costs, without Ray;
* with ``--executor ray`` at each ``--workers`` (tasks at once, one CPU each) on a local Ray
  instance started once before (its start-up is its own row: a cluster already running, as
  with ``--address``, does not pay it);

and every dataset is compared with the serial one, file by file (meta.json without its time
fields). rows/s: the rows over prepare's own seconds (meta.json). Without Ray installed, or with
``--no-ray`` (the smoke size), the Ray rows say so and the rest is measured.

    python benchmarks/prepare_ray.py [--rows 4000000] [--files 8] [--workers 1 2]
        [--chunk-rows 262144] [--out bench-out/prepare-ray] [--no-ray]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from _machine import machine_info
from _table import markdown
from autoloss.data.mapreduce.executors import RayTasks, SerialTasks, TaskExecutor
from autoloss.data.prepare import prepare
from autoloss.data.synth import criteo_file_names, write_synthetic_criteo_files

RAY_ABSENT = "Ray is not installed (pip install 'autoloss-rec[ray]'): Ray not measured"
RAY_LEFT_OUT = "Ray left out (--no-ray): Ray not measured"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=4_000_000, help="rows of all files together")
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray tasks at once")
    ap.add_argument("--chunk-rows", type=int, default=262_144)
    ap.add_argument("--out", type=Path, default=Path("bench-out") / "prepare-ray")
    ap.add_argument(
        "--no-ray",
        action="store_true",
        help="leave Ray out (the smoke size: a local instance takes seconds to start)",
    )
    return ap


def dataset_files(path: Path) -> dict[str, bytes]:
    """Every file of a dataset, meta.json without its time fields."""
    found = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "meta.json":
                meta = json.loads(data)
                meta.pop("created"), meta.pop("seconds")
                data = json.dumps(meta).encode()
            found[str(p.relative_to(path))] = data
    return found


def inputs(args: argparse.Namespace) -> list[Path]:
    """The day files (written once for a size)."""
    d = args.out / f"criteo-{args.rows}-in-{args.files}"
    paths = [d / name for name in criteo_file_names(args.files)]
    if not all(p.exists() for p in paths):
        start = time.perf_counter()
        write_synthetic_criteo_files(d, args.rows, args.files, seed=0)
        print(
            f"wrote {args.files} files of {args.rows:,} rows in {time.perf_counter() - start:.1f} s"
        )
    return paths


def run(
    args: argparse.Namespace, files: list[Path], name: str, tasks: str | TaskExecutor
) -> tuple[Path, float]:
    """Prepare the files into ``--out/<name>``; (its path, its seconds)."""
    out = args.out / name
    result = prepare(
        "criteo", files, out, overwrite=True, chunk_rows=args.chunk_rows, executor=tasks
    )
    return out, float(result.meta["seconds"])


def row(path: str, workers: object, rows: int, seconds: float, serial: float) -> dict[str, Any]:
    return {
        "path": path, "workers": workers, "rows": rows, "seconds": seconds,
        "rows/s": rows / seconds, "vs serial": serial / seconds,
    }  # fmt: skip


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """Serial, in-process map-reduce and Ray at each --workers; identical bytes checked."""
    files = inputs(args)
    print(f"load average before: {os.getloadavg()}")
    ref_path, serial = run(args, files, "serial", "local")
    ref = dataset_files(ref_path)
    table = [row("serial (--executor local)", "-", args.rows, serial, serial)]
    path, seconds = run(args, files, "tasks", SerialTasks())
    table.append(row("map-reduce, tasks in this process", 1, args.rows, seconds, serial))
    table[-1]["identical"] = dataset_files(path) == ref
    shutil.rmtree(path)
    table += _ray_rows(args, files, ref, serial)
    table[0]["identical"] = True
    print(f"load average after: {os.getloadavg()}")
    if not all(r.get("identical", True) for r in table):
        print(markdown(table))
        raise SystemExit("prepare-ray: a dataset differs from the serial one")
    return table


def _ray_rows(
    args: argparse.Namespace, files: list[Path], ref: dict[str, bytes], serial: float
) -> list[dict[str, Any]]:
    """One row per --workers on a local Ray instance (with as many CPUs as the most workers),
    and one for its start-up; one saying Ray is absent without it."""
    if args.no_ray or not _ray_installed():
        note = RAY_ABSENT if not _ray_installed() else RAY_LEFT_OUT
        print(note)
        return [{"path": "--executor ray", "note": note}]
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=max(args.workers), include_dashboard=False)
    rows: list[dict[str, Any]] = [
        {"path": "Ray start-up (local instance)", "seconds": time.perf_counter() - start}
    ]
    try:
        for w in args.workers:
            path, seconds = run(args, files, f"ray-{w}", RayTasks(workers=w))
            rows.append(row("--executor ray", w, args.rows, seconds, serial))
            rows[-1]["identical"] = dataset_files(path) == ref
            shutil.rmtree(path)
    finally:
        ray.shutdown()
    return rows


def _ray_installed() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["ray"] is None
        return False


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
