"""Scoring throughput: ``evaluate`` on a prepared split, ``predict`` on a raw file, ONNX Runtime and
TorchScript on the exported model, and single-row latency, for one DeepFM run.

Usage: python benchmarks/serving_throughput.py [--rows 1000000] [--threads 1] [--repeat 3]

Makes (once, under ``--workdir``) the synthetic Criteo-format file of ``--rows`` rows and its
prepared dataset (``--min-count 1``: a vocabulary of ~1M rows at 1M rows, as
``train_throughput.py``), trains DeepFM (paper configuration) for ``--steps`` steps so that a run
directory with real weights exists, then times, best of ``--repeat``:
  * evaluate: the test split's logits from the prepared arrays (what ``autoloss evaluate`` and a
    training's per-epoch validation do), batches of ``data.eval_batch_size``; again without the
    heap trim after each batch (what bounding memory on large splits costs);
  * predict: ``autoloss predict`` on the whole raw file (read, encode with the run's vocabulary,
    score, write the CSV), with the encoding alone reported too;
  * onnx / torchscript: the exported model (``autoloss export``) on the encoded test split, same
    batch size; ONNX Runtime with ``--threads`` intra-op threads; their largest difference to the
    PyTorch probabilities is printed as a check;
  * latency: one row at a time, ``--single`` rows, p50 and p99 in microseconds (PyTorch eager and
    ONNX Runtime).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import synthetic_criteo
from _machine import machine_info
from _runs import train_cached
from _table import markdown
from autoloss.data.batches import BatchIterator
from autoloss.data.encoder import RowEncoder
from autoloss.data.store import EncodedDataset
from autoloss.train import heap
from autoloss.train.run import load_run
from autoloss.train.serving import ServingModel, export_run, predict_file
from autoloss.train.trainer import predict_logits


def best_of(repeat: int, fn: Any) -> tuple[float, Any]:
    """The smallest wall time of ``repeat`` calls of ``fn`` and the last call's result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def batches_of(arrays: list[np.ndarray], size: int) -> list[list[np.ndarray]]:
    n = len(arrays[0])
    return [[a[i : i + size] for a in arrays] for i in range(0, n, size)]


def onnx_scorer(path: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed (pip install 'autoloss[export]'): ONNX skipped")
        return None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda parts: session.run(None, dict(zip(names, parts, strict=True)))[0]


def latency(score: Any, rows: list[list[np.ndarray]]) -> tuple[float, float]:
    times = []
    for parts in rows:
        t0 = time.perf_counter()
        score(parts)
        times.append(time.perf_counter() - t0)
    us = np.array(times[10:]) * 1e6  # the first calls warm caches
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200, help="training steps of the scored model")
    ap.add_argument("--single", type=int, default=2000, help="rows scored one at a time")
    ap.add_argument("--workdir", default="bench-out")
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per scoring path (rows/s, best of ``--repeat``), then the single-row latencies."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    raw, data_dir = synthetic_criteo(work, args.rows)
    run_dir = work / f"serving-run-{args.rows}"
    options = ["--data", str(data_dir), "--model", "deepfm", "--loss", "ce"]
    train_cached(run_dir, [*options, "--set", f"train.max_steps={args.steps}"])
    run = load_run(run_dir)
    split = EncodedDataset(data_dir).split("test")
    size = run.cfg.data.eval_batch_size
    n_test, n_raw = len(split), args.rows
    print(f"model: DeepFM, {sum(run.spec.cat_vocab):,} embedding rows; {args.threads} thread(s)")
    print(f"test split {n_test:,} rows, raw file {n_raw:,} rows, batch {size:,}\n")
    figures: dict[str, float] = {}

    def evaluate() -> np.ndarray:
        it = BatchIterator(split, size, shuffle=False)
        logits, _ = predict_logits(run.model, iter(it.epoch(0)), torch.device("cpu"))
        return logits

    secs, logits = best_of(args.repeat, evaluate)
    figures["evaluate (prepared split)"] = n_test / secs
    trim = heap.trim
    heap.trim = lambda: None  # what the per-batch malloc_trim costs
    secs, _ = best_of(args.repeat, evaluate)
    heap.trim = trim
    figures["evaluate, heap not trimmed after each batch"] = n_test / secs
    reference = torch.sigmoid(torch.from_numpy(logits)).numpy()

    encoder = RowEncoder(run.run_dir / "dataset")  # the run's vocabulary, as predict uses
    secs, _ = best_of(args.repeat, lambda: encoder.encode_file(raw, labels=False))
    figures["encode raw rows (predict's first half)"] = n_raw / secs
    out_csv = work / "serving-predictions.csv"
    secs, _ = best_of(args.repeat, lambda: predict_file(run_dir, raw, out_csv, batch_size=size))
    figures["predict (raw file to CSV)"] = n_raw / secs

    arrays = [split.x.astype(np.int64)]  # what a client sends: int64 ids (Criteo: no dense inputs)
    ts_path, onnx_path = work / "serving-model.pt", work / "serving-model.onnx"
    export_run(run_dir, "torchscript", ts_path)
    export_run(run_dir, "onnx", onnx_path)
    scripted = torch.jit.load(str(ts_path))
    eager = ServingModel(run.model, run.spec).eval()

    def torch_score(module: Any) -> Any:
        def score(parts: list[np.ndarray]) -> np.ndarray:
            with torch.no_grad():
                return module(*[torch.from_numpy(np.ascontiguousarray(p)) for p in parts]).numpy()

        return score

    scorers = {"torchscript": torch_score(scripted)}
    ort_score = onnx_scorer(onnx_path, args.threads)
    if ort_score is not None:
        scorers["onnx runtime"] = ort_score
    for name, score in scorers.items():
        chunks = batches_of(arrays, size)
        secs, probs = best_of(
            args.repeat, lambda s=score, c=chunks: np.concatenate([s(p) for p in c])
        )
        figures[f"{name} (encoded split)"] = n_test / secs
        print(f"{name}: largest |p - p_torch| = {np.abs(probs - reference).max():.2e}")

    singles = batches_of([a[: args.single] for a in arrays], 1)
    lat = {"pytorch eager": latency(torch_score(eager), singles)}
    if ort_score is not None:
        lat["onnx runtime"] = latency(ort_score, singles)

    rows: list[dict[str, object]] = [
        {"scoring path": name, f"rows/s (best of {args.repeat})": rps}
        for name, rps in figures.items()
    ]
    rows += [
        {"scoring path": f"{name}, one row at a time ({args.single:,} rows)", "p50 µs": p50,
         "p99 µs": p99}
        for name, (p50, p99) in lat.items()
    ]  # fmt: skip
    return rows


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
