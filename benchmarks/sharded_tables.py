"""Memory per process and rows/s: replicated against sharded embedding tables, 1 and 2 processes.

    python benchmarks/sharded_tables.py [--fields 8] [--vocab 250000] [--rows 200000]
        [--steps 60] [--budget-gib 0] [--out bench-out/sharded]

A synthetic encoded dataset of ``--fields`` categorical fields of ``--vocab`` ids each (the
label depends on the first two), then ``autoloss train`` (DeepFM, row-wise Adagrad on the tables
in both placements, so that only the placement differs) for ``--steps`` steps: replicated and
sharded, in one process and in two (``--nproc 2``). For each: the table bytes each process holds
(``tables.json`` of a sharded run; the whole tables for a replicated one), the peak resident
memory of the largest process (``getrusage`` of the children) and the training rows/s
(result.json). With ``--budget-gib G`` every process is started under ``ulimit -v`` of G GiB of
address space, and a run that does not fit reports its one-line error instead of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _machine import machine_info  # noqa: E402
from _table import markdown  # noqa: E402

PLACEMENTS = ("replicated", "sharded")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=250_000, help="ids per field")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=4000)
    ap.add_argument("--nproc", default="1,2", help="process counts to measure")
    ap.add_argument("--budget-gib", type=float, default=0.0, help="ulimit -v per process (0: none)")
    ap.add_argument("--out", default="bench-out/sharded")
    return ap


def write_dataset(root: Path, fields: int, vocab: int, rows: int, seed: int = 0) -> Path:
    """An encoded dataset (the layout ``autoloss prepare`` writes) of random ids."""
    data = root / f"synth-{fields}x{vocab}-{rows}"
    if (data / "meta.json").exists():
        return data
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, (rows, fields), dtype=np.int64).astype(np.int32)
    w = rng.normal(0, 1.0, (2, vocab))
    y = (rng.random(rows) < 1 / (1 + np.exp(-(w[0][x[:, 0]] + w[1][x[:, 1]])))).astype(np.int32)
    cuts = {"train": (0, int(rows * 0.8)), "valid": (int(rows * 0.8), int(rows * 0.9))}
    cuts["test"] = (int(rows * 0.9), rows)
    for name, (a, b) in cuts.items():
        (data / name).mkdir(parents=True, exist_ok=True)
        np.save(data / name / "x.npy", x[a:b])
        np.save(data / name / "y.npy", y[a:b])
    names = [f"f{i}" for i in range(fields)]
    meta = {
        "format_version": 1, "format": "synthetic", "task": "binary", "num_classes": 2,
        "label": "label", "splits": {k: b - a for k, (a, b) in cuts.items()},
        "fields": [{"name": n, "kind": "categorical", "vocab_size": vocab} for n in names],
        "protocol": {"seed": seed}, "inputs": [],
    }  # fmt: skip
    (data / "vocab").mkdir(exist_ok=True)
    for n in names:
        values = [str(i) for i in range(1, vocab)]
        (data / "vocab" / f"{n}.json").write_text(json.dumps({"field": n, "values": values}))
    (data / "meta.json").write_text(json.dumps(meta))
    return data


def train_args(args: argparse.Namespace, data: Path, out: Path, placement: str, nproc: int):  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "autoloss", "train", "--data", str(data), "--out", str(out)]
    cmd += ["--overwrite", "--model", "deepfm", "--embed-dim", str(args.embed_dim)]
    cmd += ["--batch-size", str(args.batch_size), "--loss", "ce", "--device", "cpu"]
    cmd += ["--progress", "off", "--quiet", "--nproc", str(nproc), "--epochs", "1"]
    sets = {
        "train.embeddings": placement, "optim.table_optimizer": "rowwise_adagrad",
        "optim.embedding_lr": "0.02", "optim.clip_norm": "0", "train.max_steps": str(args.steps),
        "train.checkpoint_minutes": "0", "data.eval_batch_size": "20000",
    }  # fmt: skip
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


#: Runs argv[1:] and prints the peak resident memory (KiB) of its largest descendant: a fresh
#: process per run, since a process's RUSAGE_CHILDREN peak only grows.
_WRAP = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


def run_one(args: argparse.Namespace, data: Path, placement: str, nproc: int) -> dict[str, Any]:
    out = Path(args.out) / f"{placement}-{nproc}"
    cmd = [sys.executable, "-c", _WRAP, *train_args(args, data, out, placement, nproc)]
    limit = int(args.budget_gib * 2**30) if args.budget_gib > 0 else None

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, preexec_fn=cap)
    wall = time.perf_counter() - t0
    lines = proc.stderr.strip().splitlines()
    row: dict[str, Any] = {"placement": placement, "processes": nproc}
    if proc.returncode != 0:
        said = [ln for ln in lines[:-1] if ln.strip()]
        return {**row, "error": said[-1][:200] if said else f"exit {proc.returncode}"}
    result = json.loads((out / "result.json").read_text())
    return {
        **row,
        "table MiB per process": round(max(table_bytes(out, args)) / 2**20, 1),
        "peak RSS MiB (largest process)": round(int(lines[-1]) / 1024, 1),
        "train rows/s": round(result["train_rows_per_second"]),
        "test AUC": round(result["test"]["auc"], 4),
        "wall s": round(wall, 1),
    }


def table_bytes(run: Path, args: argparse.Namespace) -> list[int]:
    """The embedding table bytes each process held (tables.json of a sharded run)."""
    placement = run / "tables.json"
    if placement.exists():
        ranks = json.loads(placement.read_text())["ranks"]
        return [sum(r["bytes"].values()) for r in ranks]
    return [args.fields * args.vocab * args.embed_dim * 4]


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = write_dataset(Path(args.out), args.fields, args.vocab, args.rows)
    rows = []
    for nproc in [int(n) for n in args.nproc.split(",")]:
        for placement in PLACEMENTS:  # one run at a time: never two benchmarks at once
            rows.append(run_one(args, data, placement, nproc))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    print(machine_info())
    tables = args.fields * args.vocab * args.embed_dim * 4 / 2**20
    print(
        f"{args.fields} fields x {args.vocab:,} ids x {args.embed_dim} floats = {tables:,.1f} MiB "
        f"of embedding tables; {args.steps} steps of {args.batch_size} rows"
        + (f"; ulimit -v {args.budget_gib:g} GiB per process" if args.budget_gib else "")
    )
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
