"""What the in-process throughput benchmarks share: the synthetic Criteo-format data (made once
under a work dir), the dataset a run times on, and a DeepFM trainer in the paper's configuration."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from autoloss.data.store import EncodedDataset
from autoloss.train.config import RunConfig
from autoloss.train.trainer import Trainer


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


def add_data_options(ap: argparse.ArgumentParser, rows: int) -> None:
    """``--rows``, ``--workdir`` and ``--data``: the synthetic file of ``--rows`` rows, or a
    prepared dataset (see :func:`bench_data`)."""
    ap.add_argument("--rows", type=int, default=rows)
    ap.add_argument("--workdir", default="bench-out")
    ap.add_argument("--data", help="a prepared dataset to time on instead of the synthetic file")


def bench_parser(
    doc: str | None, *, rows: int, threads: int, rounds: int, steps: int
) -> argparse.ArgumentParser:
    """The parser an in-process throughput benchmark starts from: its description (the first line
    of ``doc``), the data options (:func:`add_data_options`), ``--threads`` (0: torch's default),
    ``--rounds`` and ``--steps`` with the benchmark's defaults."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    add_data_options(ap, rows=rows)
    ap.add_argument("--threads", type=int, default=threads, help="torch CPU threads (0: default)")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--steps", type=int, default=steps)
    return ap


def bench_data(args: argparse.Namespace) -> EncodedDataset:
    """The prepared dataset ``--data``, else the synthetic file of ``--rows`` rows prepared under
    ``--workdir`` (:func:`synthetic_criteo`)."""
    if args.data:
        return EncodedDataset(Path(args.data))
    return EncodedDataset(synthetic_criteo(Path(args.workdir), args.rows)[1])


def deepfm_trainer(data: EncodedDataset, method: str, settings: dict[str, Any]) -> Trainer:
    """A trainer of DeepFM (paper configuration) with ``--loss method`` on ``data``, seed 1, no
    progress bar; ``settings``: more ``section.key`` values, as ``--set`` gives them."""
    cfg = RunConfig()
    base = {"data.path": str(data.path), "model.name": "deepfm", "loss.method": method}
    for key, value in {**base, "train.seed": 1, "train.progress": "off", **settings}.items():
        cfg.set(key, value)
    return Trainer(cfg, dataset=data, log=lambda s: None)
