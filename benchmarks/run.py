"""The benchmark harness: named suites, each at a size, printed as a table and written as JSON.

    python -m benchmarks SUITE... [--smoke | --size full] [--json DIR] [--data PREPARED_DIR]
    python -m benchmarks all --smoke --json /tmp/bench      # every suite, in seconds each
    python -m benchmarks --list

A suite wraps the measuring function of one script of ``benchmarks/`` (``measure(args)``, the
script's own options parsed by its own ``parser()``; the scripts still run on their own with any
option). Sizes:

* ``smoke``: tiny synthetic data made on the fly under ``--workdir``/smoke (a few seconds per
  suite; ``tests/test_benchmarks_smoke.py`` runs every suite at this size, so none rots);
* ``full``: the size ``docs/benchmarks.md`` cites (minutes to hours: never on a shared machine
  while anything else runs). Suites that measure a real dataset (``model-zoo``, ``distributed``,
  ``baseline-factors``, ``controller-noise``, ``method-decision``) need ``--data`` at this size;
  the others take it instead of their synthetic file (``anchors`` makes its own split files).

Suites run one after another, never two at once. With ``--json DIR`` each writes
``DIR/<suite>-<size>.json``: ``{"format", "suite", "size", "options", "machine", "date",
"revision", "seconds", "figures"}`` (``figures``: the table's rows, one object per row;
``machine``: :func:`_machine.machine`; ``revision``: ``git describe --always --dirty``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the scripts import their helpers as top-level modules
    sys.path.insert(0, str(HERE))

from _machine import machine, machine_info  # noqa: E402
from _table import markdown  # noqa: E402

FORMAT = "autoloss-benchmark-1"
SIZES = ("smoke", "full")
#: Rows of the synthetic Criteo-format file every smoke suite shares (16 batches of 2000 rows in
#: the training split: enough for the suites that take their steps from one epoch).
SMOKE_ROWS = 40_000


@dataclass
class Context:
    """Where a suite's files go and what data it times on."""

    size: str
    workdir: Path
    data: str | None = None

    def synthetic(self) -> str:
        """The shared synthetic dataset of the smoke size (made once)."""
        from _data import synthetic_criteo

        return str(synthetic_criteo(self.workdir, SMOKE_ROWS)[1])

    def data_or_synthetic(self, suite: str) -> str:
        if self.data:
            return self.data
        if self.size == "smoke":
            return self.synthetic()
        raise SystemExit(f"benchmarks: {suite} --size full measures a real dataset: give --data")


Options = Callable[[Context], list[str]]


@dataclass(frozen=True)
class Suite:
    name: str
    module: str
    what: str
    smoke: Options
    full: Options
    #: smoke size left to the slow test (several processes that each import torch and train)
    slow: bool = False
    #: what the smoke size leaves out of the full one, and why (printed with its table)
    smoke_note: str = ""

    def options(self, ctx: Context) -> list[str]:
        return (self.smoke if ctx.size == "smoke" else self.full)(ctx)


def _synth(ctx: Context) -> list[str]:
    """The synthetic data options of a script built on ``_data.bench_parser``."""
    if ctx.data:
        return ["--data", ctx.data]
    return ["--workdir", str(ctx.workdir), "--rows", str(SMOKE_ROWS)]


def _full_data(ctx: Context) -> list[str]:
    return ["--data", ctx.data] if ctx.data else []


def _named_data(ctx: Context, suite: str) -> list[str]:
    """``--data NAME=DIR`` (the dataset's directory name) of a script that names its datasets."""
    data = ctx.data_or_synthetic(suite)
    return ["--data", f"{Path(data).name}={data}"]


SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite(
            "train",
            "train_throughput",
            "training rows/s per method (plain PyTorch loop, ce, uniform, autoloss, ...)",
            lambda c: [
                *_synth(c),
                "--steps",
                "6",
                "--rounds",
                "1",
                "--threads",
                "1",
                "--methods",
                "plain,ce,autoloss",
            ],
            _full_data,
        ),
        Suite(
            "batch-iterator",
            "batch_iterator",
            "rows/s of the shuffled batch iterator over a memory-mapped split",
            lambda c: ["--rows", "20000", "--rounds", "1"],
            lambda c: [],
        ),
        Suite(
            "kernels",
            "step_kernels",
            "the sparse step's kernels, each next to what it replaced",
            lambda c: ["--rounds", "1", "--calls", "1"],
            lambda c: [],
        ),
        Suite(
            "step-options",
            "step_options",
            "the training step against its earlier versions (ms per step)",
            lambda c: [
                *_synth(c),
                "--steps",
                "2",
                "--rounds",
                "1",
                "--no-compile",
                "--options",
                "current,previous,before",
            ],
            _full_data,
        ),
        Suite(
            "autoloss-overhead",
            "autoloss_overhead",
            "what AutoLoss adds to a CE step, part by part",
            lambda c: [*_synth(c), "--steps", "8", "--rounds", "1"],
            _full_data,
        ),
        Suite(
            "heap-policy",
            "heap_policy",
            "train.heap=keep against glibc's own heap (fresh processes)",
            lambda c: [*_synth(c), "--steps", "3", "--rounds", "1", "--methods", "ce"],
            _full_data,
            slow=True,
        ),
        Suite(
            "prepare",
            "prepare",
            "autoloss prepare --format criteo against a bare pandas parse",
            lambda c: ["--rows", "5000", "--out", str(c.workdir / "prepare")],
            lambda c: ["--out", str(c.workdir)],
        ),
        Suite(
            "prepare-ray",
            "prepare_ray",
            "prepare over many files: serial, the map-reduce in this process, --executor ray",
            lambda c: [
                "--rows",
                "20000",
                "--files",
                "4",
                "--no-ray",
                "--out",
                str(c.workdir / "prepare-ray"),
            ],
            lambda c: ["--out", str(c.workdir / "prepare-ray")],
            slow=True,  # its byte-identity is tests/data/test_prepare_ray.py's
        ),
        Suite(
            "sharded",
            "sharded_tables",
            "replicated against sharded embedding tables: memory per process and rows/s, 1 and 2"
            " processes",
            lambda c: [
                "--fields",
                "4",
                "--vocab",
                "2000",
                "--rows",
                "20000",
                "--steps",
                "3",
                "--batch-size",
                "1000",
                "--out",
                str(c.workdir / "sharded"),
            ],
            lambda c: ["--out", str(c.workdir / "sharded")],
            slow=True,
        ),
        Suite(
            "serving",
            "serving_throughput",
            "scoring rows/s (evaluate, predict, TorchScript, ONNX Runtime) and latency",
            lambda c: [
                "--workdir",
                str(c.workdir),
                "--rows",
                str(SMOKE_ROWS),
                "--steps",
                "5",
                "--repeat",
                "1",
                "--single",
                "30",
            ],
            lambda c: ["--workdir", str(c.workdir)],
            slow=True,
        ),
        Suite(
            "model-zoo",
            "model_zoo",
            "every model with CE on one dataset: test AUC / logloss and speed",
            lambda c: [
                "--data",
                c.data_or_synthetic("model-zoo"),
                "--models",
                "fm,deepfm",
                "--epochs",
                "1",
                "--set",
                "train.max_steps=2",
                "--out",
                str(c.workdir / "zoo"),
            ],
            lambda c: [
                "--data",
                c.data_or_synthetic("model-zoo"),
                "--out",
                str(c.workdir / "zoo"),
            ],
        ),
        Suite(
            "criteo-scale",
            "criteo_scale",
            "Criteo-size data in bounded memory: synth, prepare, train out of core",
            lambda c: [
                "--rows",
                "20000",
                "--steps",
                "3",
                "--threads",
                "1",
                "--root",
                str(c.workdir / "criteo-scale"),
            ],
            lambda c: ["--root", str(c.workdir / "criteo-scale")],
            slow=True,
        ),
        Suite(
            "distributed",
            "distributed_seeds",
            "one process against autoloss train --nproc N: test AUC over seeds, rows/s",
            lambda c: [
                "--data",
                c.data_or_synthetic("distributed"),
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--set",
                "train.max_steps=3",
                "--out",
                str(c.workdir / "distributed"),
            ],
            lambda c: [
                "--data",
                c.data_or_synthetic("distributed"),
                "--out",
                str(c.workdir / "distributed"),
            ],
            slow=True,
        ),
        Suite(
            "anchors",
            "anchors_speed",
            "one DeepFM training in autoloss, pytorch-fm and FuxiCTR: speed and memory",
            lambda c: [
                "--root",
                str(c.workdir / "anchors"),
                "--libraries",
                "autoloss",
                "--criteo-rows",
                "2000",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--strict",
            ],
            lambda c: ["--root", str(c.workdir / "anchors")],
            slow=True,
            smoke_note="autoloss alone: pytorch-fm and FuxiCTR need their own environment,"
            " installed from PyPI the first time (minutes, and a network)",
        ),
        Suite(
            "baseline-factors",
            "baseline_factors",
            "one training setting at a time against the CE baseline: test AUC, paired p",
            lambda c: [
                "--data",
                c.data_or_synthetic("baseline-factors"),
                "--epochs",
                "1",
                "--seeds",
                "1",
                "--set",
                "train.max_steps=2",
                "--out",
                str(c.workdir / "factors"),
                "base:",
                "clip:optim.clip_norm=10",
            ],
            lambda c: [
                "--data",
                c.data_or_synthetic("baseline-factors"),
                "--out",
                str(c.workdir / "factors"),
                "old:optim.clip_norm=0",
                "clip:",
                "both:optim.lr_decay_on_plateau=0.1",
            ],
            slow=True,
        ),
        Suite(
            "controller-noise",
            "controller_noise",
            "what AutoLoss's controller learns under label noise, against the uniform mixture",
            lambda c: [
                "--data",
                c.data_or_synthetic("controller-noise"),
                "--epochs",
                "1",
                "--set",
                "train.max_steps=2",
                "--root",
                str(c.workdir / "controller-noise"),
            ],
            lambda c: [
                "--data",
                c.data_or_synthetic("controller-noise"),
                "--root",
                str(c.workdir / "controller-noise"),
            ],
            slow=True,
        ),
        Suite(
            "method-decision",
            "method_decision",
            "AutoLoss first-order against unrolled against CE: test AUC over seeds, Welch p",
            lambda c: [
                *_named_data(c, "method-decision"),
                "--seeds",
                "2",
                "--epochs",
                "1",
                "--set",
                "train.max_steps=2",
                "--results",
                str(c.workdir / "method_decision.jsonl"),
            ],
            lambda c: [
                *_named_data(c, "method-decision"),
                "--results",
                str(c.workdir / "method_decision.jsonl"),
            ],
        ),
    )
}


def revision() -> str:
    """``git describe --always --dirty`` of the tree the benchmarks run from ("unknown" outside
    a clone)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def jsonable(value: Any) -> Any:
    """``value`` with floats that JSON cannot hold (NaN, inf) as null, tuples as lists."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def run_suite(suite: Suite, ctx: Context) -> dict[str, Any]:
    """Run one suite at ``ctx.size``: its record (what ``--json`` writes)."""
    module = importlib.import_module(suite.module)
    options = suite.options(ctx)
    args = module.parser().parse_args(options)
    t0 = time.perf_counter()
    figures = module.measure(args)
    return {
        "format": FORMAT,
        "suite": suite.name,
        "size": ctx.size,
        "options": options,
        "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "seconds": round(time.perf_counter() - t0, 2),
        "figures": jsonable(figures),
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    ap.add_argument("suites", nargs="*", metavar="SUITE", help="suite names, or all")
    ap.add_argument("--size", choices=SIZES, default="full", help="the suites' size (default full)")
    ap.add_argument("--smoke", action="store_const", const="smoke", dest="size",
                    help="the smoke size: seconds on tiny synthetic data (--size smoke)")  # fmt: skip
    ap.add_argument("--json", type=Path, metavar="DIR", help="write DIR/<suite>-<size>.json")
    ap.add_argument("--workdir", type=Path, default=Path("bench-out"),
                    help="where data and runs are made (default bench-out; smoke: its smoke/)")  # fmt: skip
    ap.add_argument("--data", help="a prepared dataset to measure on (model-zoo and distributed "
                    "need one at the full size)")  # fmt: skip
    ap.add_argument("--list", action="store_true", help="list the suites and exit")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list or not args.suites:
        for s in SUITES.values():
            print(f"{s.name:18} {s.what}{' (smoke: slow test)' if s.slow else ''}")
        return 0 if args.list else 2
    names = list(SUITES) if args.suites == ["all"] else args.suites
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"benchmarks: unknown suite {', '.join(unknown)} (--list)", file=sys.stderr)
        return 2
    workdir = args.workdir / "smoke" if args.size == "smoke" else args.workdir
    ctx = Context(args.size, workdir, args.data)
    print(machine_info())
    for name in names:
        print(f"\n## {name} ({args.size})", flush=True)
        if args.size == "smoke" and SUITES[name].smoke_note:
            print(f"(smoke: {SUITES[name].smoke_note})", flush=True)
        record = run_suite(SUITES[name], ctx)
        print(markdown(record["figures"]))
        print(f"({record['seconds']} s)", flush=True)
        if args.json:
            args.json.mkdir(parents=True, exist_ok=True)
            path = args.json / f"{name}-{args.size}.json"
            path.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
