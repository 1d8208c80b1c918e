"""Criteo-size data in bounded memory: synthesise, prepare, train CE and AutoLoss out of core.

For each row count (default 4M, 16M, 45M: the paper's Criteo size) this writes a synthetic file in
the exact Criteo layout (``autoloss synth criteo``), prepares it (min count 10), and trains DeepFM
with ``--loss ce`` and ``--loss autoloss`` for ``--steps`` steps each, reading the memory-mapped
split with block shuffling (``data.block_rows``): the split is never loaded whole. Every command
runs in its own process, one after another, and reports its wall seconds, its peak resident set
(``VmHWM``) and its peak *anonymous* memory (``RssAnon``, sampled every 0.2 s): the resident set
also counts the memory-mapped pages of the dataset the kernel keeps cached (reclaimable, and
growing with what was read), the anonymous memory is what the process itself holds. The claim to
check: anonymous memory grows with the vocabulary, not with the row count.

    python benchmarks/criteo_scale.py --rows 4000000,16000000,45000000 --steps 2000 \
        --root bench-out/criteo-scale [--keep] [--threads N]

The raw file of each size is deleted after preparation unless ``--keep`` (45M rows take ~13 GB).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine_info  # type: ignore[import-not-found]
from _table import markdown  # type: ignore[import-not-found]

# Runs ``autoloss.cli`` with the given arguments and prints its peak memory as one JSON line on
# stderr's last line.
_MEASURED = r"""
import json, runpy, sys, threading, time
peak = {"anon": 0}
def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0
def sample():
    while True:
        peak["anon"] = max(peak["anon"], anon_kb())
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
sys.argv = ["autoloss", *sys.argv[1:]]
try:
    runpy.run_module("autoloss.cli", run_name="__main__")
finally:
    peak["anon"] = max(peak["anon"], anon_kb())
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mb": hwm // 1024, "peak_anon_mb": peak["anon"] // 1024}),
          file=sys.stderr)
"""


def measured(args: list[str]) -> dict:
    """Run ``autoloss ARGS`` in its own process; its seconds and peak memory."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"autoloss {' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")
    figures = json.loads(proc.stderr.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), **figures, "stdout": proc.stdout}


def one_size(
    root: Path, rows: int, steps: int, keep: bool, threads: int, settings: list[str]
) -> list[dict]:
    raw = root / f"criteo{rows}.txt"
    data = root / f"criteo{rows}"
    out = []
    if not (data / "meta.json").exists():
        if not raw.exists():
            synth = measured(["synth", "criteo", "--rows", str(rows), "--out", str(raw)])
            out.append({"rows": rows, "step": "synth", **synth})
        prep = ["prepare", "--format", "criteo", "--input", str(raw), "--out", str(data)]
        res = measured([*prep, "--overwrite", "--progress", "off"])
        out.append({"rows": rows, "step": "prepare", **res, "rows_per_s": rows / res["seconds"]})
        if not keep:
            raw.unlink()
    meta = json.loads((data / "meta.json").read_text())
    vocab = sum(f.get("vocab_size", 0) for f in meta["fields"])
    for loss in ("ce", "autoloss"):
        run = ["train", "--data", str(data), "--loss", loss, "--max-steps", str(steps)]
        run += ["--epochs", "1", "--progress", "off", "--out", str(root / f"run-{rows}-{loss}")]
        run += [
            "--overwrite",
            "--set",
            "data.block_rows=65536",
            "--set",
            "train.eval_every_steps=0",
        ]
        run += ["--threads", str(threads)] if threads else []
        run += [arg for kv in settings for arg in ("--set", kv)]
        res = measured(run)
        result = json.loads((root / f"run-{rows}-{loss}" / "result.json").read_text())
        out.append(
            {
                "rows": rows,
                "step": f"train {loss}",
                **res,
                "rows_per_s": result["train_rows_per_second"],
                "vocab": vocab,
            }
        )
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rows", default="4000000,16000000,45000000")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--root", type=Path, default=Path("bench-out/criteo-scale"))
    p.add_argument("--keep", action="store_true", help="keep the raw synthetic files")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the trainings (0: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of the trainings, e.g. train.heap=system (repeatable)")  # fmt: skip
    return p


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per size and step (synth, prepare, train ce, train autoloss)."""
    args.root.mkdir(parents=True, exist_ok=True)
    threads = args.threads or "all"
    print(
        f"DeepFM, batch 2000, {args.steps} steps per training, block shuffling (65,536 rows), "
        f"torch threads: {threads}"
    )
    out: list[dict[str, object]] = []
    for rows in (int(r) for r in args.rows.split(",")):
        for r in one_size(args.root, rows, args.steps, args.keep, args.threads, args.set):
            r.pop("stdout", None)
            out.append({
                "rows": rows, "step": r["step"], "seconds": r["seconds"],
                "rows/s": r.get("rows_per_s"), "peak RSS MB": r["peak_rss_mb"],
                "peak anonymous MB": r["peak_anon_mb"], "vocabulary": r.get("vocab"),
            })  # fmt: skip
            print(f"{rows:,} rows: {r['step']} {r['seconds']} s", flush=True)
    return out


def main() -> int:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
