"""The trainer's C heap policy: ``train.heap=keep`` (the default) against glibc's own (``system``).

Usage: python benchmarks/heap_policy.py [--rows 1000000 | --data PREPARED_DIR] [--rounds 5]
                                        [--steps 50] [--threads 1] [--methods ce,autoloss]

A heap policy is a property of the process, so each measurement is a fresh process: rounds
alternate one ``system`` process and one ``keep`` process (the pair shares the moment's load on a
shared machine). Each process builds a DeepFM trainer (paper configuration, batch 2000) per method
on the same data, takes 10 warm-up steps, then times ``--steps`` steps and counts the minor page
faults and the system CPU time they cost (``getrusage``), and reports its peak RSS. Printed: every
round, then medians over rounds and the median of the per-round ratio system / keep of the step
time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import bench_data, bench_parser, deepfm_trainer
from _machine import machine_info
from _table import markdown

POLICIES = ("system", "keep")


def child(args: argparse.Namespace) -> None:
    """One process: every method's step under ``--child``'s policy, as one JSON line."""
    torch.set_num_threads(args.threads)
    data = bench_data(args)
    out: dict[str, dict[str, float]] = {}
    for method in args.methods.split(","):
        tr = deepfm_trainer(data, method, {"train.heap": args.child})
        tr.model.train()
        it = tr._iterator("train", train=True)
        batches = [b for _, b in zip(range(args.steps + 10), it.epoch(0), strict=False)]
        for b in batches[:10]:
            tr.train_step(b)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for b in batches[10:]:
            tr.train_step(b)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        n = len(batches) - 10
        out[method] = {
            "ms": (t1 - t0) / n * 1000,
            "faults": (r1.ru_minflt - r0.ru_minflt) / n,
            "sys_ms": (r1.ru_stime - r0.ru_stime) / n * 1000,
        }
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"methods": out, "peak_rss_mb": peak}))


def run_child(args: argparse.Namespace, policy: str) -> dict:
    """One measuring process under ``policy``, with this command's own options."""
    cmd = [sys.executable, __file__, "--rows", str(args.rows), "--workdir", args.workdir]
    cmd += ["--data", args.data] if args.data else []
    cmd += ["--threads", str(args.threads), "--steps", str(args.steps)]
    cmd += ["--methods", args.methods, "--child", policy]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def parser() -> argparse.ArgumentParser:
    ap = bench_parser(__doc__, rows=1_000_000, threads=1, rounds=5, steps=50)
    ap.add_argument("--methods", default="ce,autoloss")
    ap.add_argument("--child", choices=POLICIES, help=argparse.SUPPRESS)
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per method and policy: medians over rounds of fresh processes."""
    bench_data(args)  # prepares the synthetic file once, outside the timed processes
    rounds: list[dict[str, dict]] = []
    for r in range(args.rounds):
        rounds.append({p: run_child(args, p) for p in POLICIES})
        line = [
            f"{m} {p} {rounds[-1][p]['methods'][m]['ms']:.2f} ms"
            for m in args.methods.split(",")
            for p in POLICIES
        ]
        print(f"round {r + 1}: " + ", ".join(line), flush=True)
    rows: list[dict[str, object]] = []
    for m in args.methods.split(","):
        for p in POLICIES:
            med = {k: statistics.median(x[p]["methods"][m][k] for x in rounds) for k in
                   ("ms", "faults", "sys_ms")}  # fmt: skip
            rows.append({
                "method": m, "heap": p, "ms per step": med["ms"],
                "minor faults per step": med["faults"], "system ms per step": med["sys_ms"],
                "peak RSS MB": statistics.median(x[p]["peak_rss_mb"] for x in rounds),
                "time system / keep": statistics.median(
                    x["system"]["methods"][m]["ms"] / x[p]["methods"][m]["ms"] for x in rounds
                ),
            })  # fmt: skip
    return rows


def main() -> None:
    args = parser().parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(args.threads)  # as the measured processes (for machine_info)
    print(machine_info())
    rows = measure(args)
    print(f"\nmedians of {args.rounds} rounds ({args.steps} steps of 2000 rows per process):")
    print(markdown(rows))


if __name__ == "__main__":
    main()
