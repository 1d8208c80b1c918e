"""What the anchor benchmarks share: the anchors' own virtual environment, the data splits every
library trains on, and running one training of each library as a subprocess that prints one
JSON line of figures.

The anchors (FuxiCTR, pytorch-fm) are installed from PyPI into ``<root>/anchors-venv``, never
into ours: FuxiCTR 2.3 needs ``polars<2``. torch is pinned to the version our project pins, so
both sides run the same kernels.

Data: each dataset is one directory with ``train/valid/test`` in two layouts, made once:
``*.csv`` with a header (label first; what FuxiCTR and pytorch-fm read) and, for the Criteo
layout, ``*.txt`` (tab-separated, no header: what ``autoloss prepare --format criteo`` reads).
The synthetic Criteo file is split by position (8:1:1): its rows are i.i.d.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pv

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ANCHOR_PACKAGES = ["torch==2.13.0", "fuxictr==2.3.10", "polars<2", "torchfm==0.7.0"]
SPLITS = ("train", "valid", "test")
CRITEO_COLUMNS = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def anchors_python(root: Path) -> Path:
    """The anchors' interpreter, building their virtual environment the first time."""
    venv = root / "anchors-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = " ".join(ANCHOR_PACKAGES)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"building the anchors' environment in {venv} ({wanted}); takes a few minutes")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *ANCHOR_PACKAGES],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def frappe_data(root: Path, source: Path) -> Path:
    """Frappe_x1's three splits (``source`` holds train/valid/test.csv.gz) as plain CSVs."""
    out = root / "data" / "frappe"
    if not (out / "test.csv").exists():
        out.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            part = out / f"{split}.csv.part"
            with gzip.open(source / f"{split}.csv.gz", "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(out / f"{split}.csv.part", out / f"{split}.csv")
    return out


def criteo_data(root: Path, rows: int, seed: int = 7) -> Path:
    """A synthetic Criteo-layout file of ``rows`` rows, split 8:1:1 by position, in both layouts."""
    out = root / "data" / f"criteo{rows}"
    if (out / "test.csv").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "all.txt"
    cli = [sys.executable, "-m", "autoloss.cli", "synth", "criteo"]
    subprocess.run([*cli, "--rows", str(rows), "--seed", str(seed), "--out", str(raw)], check=True)
    read = pv.ReadOptions(column_names=CRITEO_COLUMNS)
    parse = pv.ParseOptions(delimiter="\t")
    types = {c: pa.string() for c in CRITEO_COLUMNS if c.startswith("C")}
    convert = pv.ConvertOptions(column_types=types, strings_can_be_null=True)
    table = pv.read_csv(raw, read_options=read, parse_options=parse, convert_options=convert)
    n_train, n_valid = rows * 8 // 10, rows // 10
    bounds = {"train": (0, n_train), "valid": (n_train, n_valid), "test": (n_train + n_valid, None)}
    # the raw layout again (tab-separated, no header, no quotes): byte-identical to the raw lines
    raw_layout = pv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    for split, (start, length) in bounds.items():
        part = table.slice(start, length)
        pv.write_csv(part, out / f"{split}.csv")
        pv.write_csv(part, out / f"{split}.txt", write_options=raw_layout)
    raw.unlink()
    return out


def run_json(cmd: list[str], *, env: dict[str, str] | None = None) -> dict:
    """Run one benchmark subprocess; its last stdout line is its JSON figures."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["wall_s"] = round(time.perf_counter() - t0, 2)
    return figures
