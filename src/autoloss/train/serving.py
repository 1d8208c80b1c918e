"""``autoloss predict`` and ``autoloss export``: using a trained run outside training.

Both use the run directory only (``config.yaml``, ``model.pt``, ``dataset/``): raw rows are encoded
with the vocabularies saved at preparation time, unseen values map to the OOV id.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data.prepare import DEFAULT_CHUNK_ROWS
from autoloss.data.spec import Batch, FeatureSpec
from autoloss.errors import ConfigError, DataError
from autoloss.files import (
    STALE_SECONDS,
    atomic_output,
    check_writable,
    remove_stale_temporaries,
)
from autoloss.train.run import load_run


class ServingModel(nn.Module):
    """A trained model that returns probabilities: (B,) P(y=1) for binary, (B, C) otherwise."""

    def __init__(self, model: nn.Module, spec: FeatureSpec) -> None:
        super().__init__()
        self.model = model
        self.binary = spec.num_classes == 2

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = self.model(x, dense, bags)
        return torch.sigmoid(logits) if self.binary else torch.softmax(logits, dim=-1)


def example_inputs(
    spec: FeatureSpec, meta: dict[str, Any], batch: int = 4
) -> tuple[torch.Tensor, ...]:
    """Inputs of the right shapes and dtypes for tracing/export (only the kinds the data has)."""
    x = torch.zeros(batch, len(spec.cat_names), dtype=torch.long)
    inputs: list[torch.Tensor] = [x]
    if spec.dense_names:
        inputs.append(torch.zeros(batch, len(spec.dense_names)))
    if spec.bag_names:
        max_len = max(int(f.get("max_len", 1)) for f in meta["fields"] if f["kind"] == "multivalue")
        inputs.append(torch.full((batch, len(spec.bag_names), max_len), -1, dtype=torch.long))
    return tuple(inputs)


class _Positional(nn.Module):
    """Binds the optional inputs by keyword so exported graphs take exactly the inputs the data has."""

    def __init__(self, inner: ServingModel, has_dense: bool, has_bags: bool) -> None:
        super().__init__()
        self.inner, self.has_dense, self.has_bags = inner, has_dense, has_bags

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        it = iter(args)
        x = next(it)
        dense = next(it) if self.has_dense else None
        bags = next(it) if self.has_bags else None
        return self.inner(x, dense, bags)


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    run = load_run(run_dir, device="cpu")
    wrapped = _Positional(
        ServingModel(run.model, run.spec).eval(),
        bool(run.spec.dense_names),
        bool(run.spec.bag_names),
    )
    inputs = example_inputs(run.spec, run.meta)
    names = (
        ["x"]
        + (["dense"] if run.spec.dense_names else [])
        + (["bags"] if run.spec.bag_names else [])
    )
    out = output_file(out)
    # Serialised in memory, then written by Python: torch's C++ writers abort the process
    # (std::ios_failure) on a full disk instead of raising.
    buf = io.BytesIO()
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapped, inputs, check_trace=False)
            torch.jit.save(traced, buf)
        elif fmt == "onnx":
            torch.onnx.export(
                wrapped,
                inputs,
                buf,  # type: ignore[arg-type]  # a file object: the legacy exporter writes to it
                input_names=names,
                output_names=["prob"],
                dynamic_axes={n: {0: "batch"} for n in [*names, "prob"]},
                opset_version=17,
                dynamo=False,  # torch.export path fails on the batch-dependent graph; legacy exporter verified by tests
            )
        else:
            raise ConfigError(f"--format {fmt}: expected onnx or torchscript")
    with atomic_output(out, what=f"the {fmt} model") as fh:
        fh.write(buf.getbuffer())
    return out


def predict_file(
    run_dir: str | Path,
    input_path: str | Path,
    out: str | Path,
    batch_size: int = 20000,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> int:
    """Score the raw rows of ``input_path``; writes a CSV, returns the number of rows.

    The file streams through chunk by chunk (``chunk_rows`` rows: read, encode, score, write), so
    memory holds one chunk whatever the file's size. The CSV appears atomically when every row
    was scored: a bad row stops the command with its line and leaves no output."""
    from autoloss.data.encoder import RowEncoder

    path = Path(input_path)
    out = output_file(out, inputs=[path])
    run = load_run(run_dir, device="cpu")
    encoder = RowEncoder(run.run_dir / "dataset")
    model = ServingModel(run.model, run.spec).eval()
    n = 0
    with atomic_output(out, "w", what="the predictions", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        # Labels are ignored: a label column, if any, is neither read nor checked.
        for rows in encoder.iter_encoded(path, chunk_rows=chunk_rows, labels=False):
            p = _score(model, rows.batch(), batch_size)
            if n == 0:
                header = (
                    ["prob"] if p.ndim == 1 else ["pred", *[f"p{c}" for c in range(p.shape[1])]]
                )
                w.writerow(header)
            _write_predictions(w, p)
            n += len(p)
        if n == 0:
            raise DataError("no data rows", path=path)
    return n


@torch.no_grad()
def _score(model: nn.Module, batch: Batch, batch_size: int) -> np.ndarray:
    """The model's probabilities of ``batch``'s rows, ``batch_size`` rows at a time."""
    whole = batch.inputs()
    n = len(batch)
    parts = []
    for a in range(0, n, batch_size):
        part = [None if t is None else t[a : a + batch_size] for t in whole]
        parts.append(model(*part).numpy())
    return np.concatenate(parts)


def _write_predictions(w: Any, p: np.ndarray) -> None:
    """CSV rows of probabilities (B,) -> ``prob``, or (B, C) -> ``pred, p0..pC-1``."""
    if p.ndim == 1:
        w.writerows([[f"{v:.6f}"] for v in p])
        return
    pred = p.argmax(1)
    w.writerows([[int(c), *[f"{v:.6f}" for v in row]] for c, row in zip(pred, p)])


def output_file(out: str | Path, inputs: Sequence[Path] = ()) -> Path:
    """``out`` as a file to (re)write, its directory created: ConfigError (``--out``) when it is a
    directory, lies under a file, is one of ``inputs``, or its directory cannot be made."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError("is a directory: give a file name", path=out, column="--out")
    check_writable(out, is_dir=False)
    for p in inputs:
        if out.exists() and p.exists() and out.resolve() == p.resolve():
            raise ConfigError("is the input file: choose another --out", path=out, column="--out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ConfigError(
            f"cannot create its directory ({reason})", path=out, column="--out"
        ) from None
    # temporary files of earlier writes of this file that a kill left (not a live one's)
    remove_stale_temporaries(out.parent, min_age=STALE_SECONDS, name=out.name)
    return out
