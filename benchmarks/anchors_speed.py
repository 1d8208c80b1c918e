"""Speed and memory of one DeepFM training in autoloss, pytorch-fm and FuxiCTR, on the same splits.

Every library trains the same configuration (embedding 16, MLP 128-128 with BatchNorm and
dropout 0.2, Adam 1e-3, batch 2000, best epoch on validation AUC restored, early stopping with
patience 2) for ``--epochs`` epochs through its own pipeline, from the same CSV/text splits with
min count 1 (every training value gets an id, so the synthetic Criteo-layout file has a large
vocabulary): ``autoloss prepare`` + ``anchors/ours_run.py`` for us, ``anchors/torchfm_run.py``
and ``anchors/fuxictr_run.py`` in the anchors' environment (built under ``--root`` the first
time). The runs go one after another, never two at once, each with ``--threads`` torch threads
(and as many preparation workers: ``autoloss prepare --workers``, ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS``, ``POLARS_MAX_THREADS``). Run it once per thread count (``FRAPPE_X1``:
the directory of the Frappe_x1 files, docs/data.md "Frappe_x1"):

    python benchmarks/anchors_speed.py --root bench-out/anchors --frappe $FRAPPE_X1 \
        --criteo-rows 1000000 --epochs 3 --threads 1
    python benchmarks/anchors_speed.py ... --threads 2

Columns: ``prepare s`` is the encoding of the three splits (ours: the ``autoloss prepare``
process; FuxiCTR: its feature processor and parquet files, rebuilt for every invocation;
pytorch-fm: pandas encoding inside its runner); ``epoch s`` is training seconds over epochs run
(validation after each epoch included, as each library's fit does it; ours: the whole
``train_run``, test scoring and writing the run directory included); ``peak RSS MB`` is the
largest process of the run (ours: preparation and training are two processes, the larger one;
the anchors prepare and train in one). Each run's figures are also written under
``--root/results/speed-t<threads>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from _machine import machine_info  # type: ignore[import-not-found]
from _table import markdown  # type: ignore[import-not-found]
from anchors.common import HERE, anchors_python, criteo_data, frappe_data, log, run_json

LIBRARIES = ("autoloss", "pytorch-fm", "fuxictr")
#: The columns of a dataset's table.
COLUMNS = (
    "library", "prepare s", "train rows/s", "epoch s", "test AUC", "test logloss", "peak RSS MB",
    "eval rows/s",
)  # fmt: skip

# Runs a command and prints its seconds and peak RSS as one JSON line (our prepare's figures).
TIMED = """\
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"prepare_s": round(seconds, 2), "peak_rss_mb": round(peak)}))
"""


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS"):
            env[var] = str(threads)
    return env


def run_ours(args: argparse.Namespace, ds: dict, work: Path) -> dict:
    prepared = work / "prepared" / ds["name"]
    ext = "txt" if ds["kind"] == "criteo" else "csv"
    files = {s: str(ds["data"] / f"{s}.{ext}") for s in ("train", "valid", "test")}
    prep = [sys.executable, "-m", "autoloss.cli", "prepare", "--format", ds["kind"]]
    prep += ["--input", files["train"], "--valid", files["valid"], "--test", files["test"]]
    prep += ["--min-count", "1", "--out", str(prepared), "--overwrite", "--progress", "off"]
    prep += ["--workers", str(args.threads)]
    env = thread_env(args.threads)
    prepare = run_json([sys.executable, "-c", TIMED, *prep], env=env)
    cmd = [sys.executable, str(HERE / "ours_run.py"), "--data", str(prepared)]
    cmd += ["--model", "deepfm", "--seed", str(args.seed), "--epochs", str(args.epochs)]
    cmd += ["--threads", str(args.threads), "--out", str(work / "runs" / ds["name"])]
    figures = run_json(cmd, env=env)
    figures["prepare_s"] = prepare["prepare_s"]
    figures["peak_rss_mb"] = max(figures["peak_rss_mb"], prepare["peak_rss_mb"])
    return figures


def run_anchor(args: argparse.Namespace, ds: dict, work: Path, library: str) -> dict:
    script = "torchfm_run.py" if library == "pytorch-fm" else "fuxictr_run.py"
    lib_work = work / f"{library}-work"
    shutil.rmtree(lib_work, ignore_errors=True)  # FuxiCTR reuses built features: time a fresh build
    cmd = [str(args.python), str(HERE / script), "--data", str(ds["data"]), "--kind", ds["kind"]]
    cmd += ["--model", "deepfm", "--seed", str(args.seed), "--epochs", str(args.epochs)]
    cmd += ["--min-count", "1", "--threads", str(args.threads), "--work", str(lib_work)]
    return run_json(cmd, env=thread_env(args.threads))


def row(library: str, r: dict | None) -> dict[str, object]:
    """One library's row of a dataset's table (``r`` None: the run failed)."""
    if r is None:
        return {"library": library, "prepare s": "failed", **dict.fromkeys(COLUMNS[2:], "")}
    epoch_s = r["train_s"] / max(r["epochs_run"], 1)
    cells = [
        f"{r['prepare_s']:.2f}", f"{r['train_rows_per_s']:,}",
        f"{epoch_s:.2f} ({r['epochs_run']} ep)", f"{r['test_auc']:.4f}",
        f"{r['test_logloss']:.4f}", f"{r['peak_rss_mb']:,}", f"{r['test_eval_rows_per_s']:,}",
    ]  # fmt: skip
    return {"library": library, **dict(zip(COLUMNS[1:], cells, strict=True))}


def datasets(args: argparse.Namespace) -> list[dict]:
    out = []
    if args.frappe:
        data = frappe_data(args.root, Path(args.frappe))
        out.append({"name": "frappe_x1", "kind": "frappe", "data": data})
    if args.criteo_rows:
        data = criteo_data(args.root, args.criteo_rows)
        out.append({"name": data.name, "kind": "criteo", "data": data})
    return out


def libraries_option(text: str) -> list[str]:
    """``--libraries``: names of :data:`LIBRARIES`, comma-separated."""
    libraries = [lib for lib in text.split(",") if lib]
    unknown = set(libraries) - set(LIBRARIES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown libraries: {', '.join(sorted(unknown))}")
    return libraries


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("bench-out/anchors"))
    p.add_argument("--frappe", help="directory of Frappe_x1's train/valid/test.csv.gz")
    p.add_argument("--criteo-rows", type=int, default=1_000_000, help="0: no Criteo-layout data")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads of every run (0: all)")
    p.add_argument("--libraries", type=libraries_option, default=",".join(LIBRARIES),
                   help="the libraries to run")  # fmt: skip
    p.add_argument("--strict", action="store_true",
                   help="a failed run stops the benchmark (default: its row says failed)")  # fmt: skip
    return p


def run_libraries(args: argparse.Namespace, ds: dict, work: Path) -> dict[str, dict | None]:
    """Each library's figures on dataset ``ds`` (None where its run failed), one after another."""
    results: dict[str, dict | None] = {}
    for library in args.libraries:
        log(f"{ds['name']}: {library}")
        try:
            if library == "autoloss":
                figures = run_ours(args, ds, work)
            else:
                figures = run_anchor(args, ds, work, library)
        except (RuntimeError, KeyError, ValueError) as exc:
            if args.strict:
                raise
            log(f"{ds['name']}: {library} failed: {exc}")
            results[library] = None
            continue
        log(json.dumps(figures))
        results[library] = figures
        path = args.root / "results" / f"speed-t{args.threads}" / f"{ds['name']}-{library}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures))
    return results


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per dataset and library (the ``dataset`` column, then :data:`COLUMNS`)."""
    args.root = args.root.resolve()
    print(f"every run: {args.threads or 'all'} threads, {args.epochs} epochs, seed {args.seed}")
    if {"pytorch-fm", "fuxictr"} & set(args.libraries):
        args.python = anchors_python(args.root)
    work = args.root / f"speed-t{args.threads}"
    rows: list[dict[str, object]] = []
    for ds in datasets(args):
        results = run_libraries(args, ds, work)
        rows += [{"dataset": ds["name"], **row(lib, r)} for lib, r in results.items()]
    return rows


def main() -> int:
    args = parser().parse_args()
    print(machine_info())
    rows = measure(args)
    tables = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        part = [
            {k: v for k, v in r.items() if k != "dataset"} for r in rows if r["dataset"] == name
        ]
        tables.append(f"\n### {name}\n\n{markdown(part)}")
    print("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
