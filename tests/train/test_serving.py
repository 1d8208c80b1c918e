"""Export: the exported graphs give the same probabilities as the trained PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.cli import main
from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedDataset
from autoloss.train.run import load_run
from autoloss.train.serving import ServingModel


@pytest.fixture
def trained_run(tiny_dataset: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), "--model", "deepfm", "--loss", "ce", "--epochs", "1",
            "--embed-dim", "8", "--mlp", "16", "--out", str(run), "--progress", "off", "--device", "cpu"]
    assert main(args) == 0
    return run


def _reference(run_dir: Path, data: Path) -> tuple[torch.Tensor, np.ndarray]:
    run = load_run(run_dir)
    batch = next(iter(BatchIterator(EncodedDataset(data).split("test"), 64, shuffle=False).epoch(0)))
    with torch.no_grad():
        ref = ServingModel(run.model, run.spec).eval()(batch.x).numpy()
    return batch.x, ref


def test_export_torchscript(trained_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert main(["export", "--run", str(trained_run), "--format", "torchscript", "--out", str(out)]) == 0
    x, ref = _reference(trained_run, tiny_dataset)
    loaded = torch.jit.load(str(out))
    np.testing.assert_allclose(loaded(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_export_onnx(trained_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "--run", str(trained_run), "--format", "onnx", "--out", str(out)]) == 0
    x, ref = _reference(trained_run, tiny_dataset)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
