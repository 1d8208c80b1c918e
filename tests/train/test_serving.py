"""Export: the exported graphs give the same probabilities as the trained PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoloss.cli import main
from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedDataset
from autoloss.errors import DataError
from autoloss.train.run import load_run
from autoloss.train.serving import ServingModel, predict_file


@pytest.fixture
def trained_run(tiny_dataset: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tiny_dataset),
        "--model",
        "deepfm",
        "--loss",
        "ce",
        "--epochs",
        "1",
        "--embed-dim",
        "8",
        "--mlp",
        "16",
        "--out",
        str(run),
        "--progress",
        "off",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    return run


def _reference(run_dir: Path, data: Path) -> tuple[torch.Tensor, np.ndarray]:
    run = load_run(run_dir)
    batch = next(
        iter(BatchIterator(EncodedDataset(data).split("test"), 64, shuffle=False).epoch(0))
    )
    with torch.no_grad():
        ref = ServingModel(run.model, run.spec).eval()(batch.x).numpy()
    return batch.x, ref


def test_export_torchscript(trained_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert (
        main(["export", "--run", str(trained_run), "--format", "torchscript", "--out", str(out)])
        == 0
    )
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


@pytest.mark.e2e
def test_predict_raw_movielens_rows(tmp_path: Path) -> None:
    """prepare -> train -> predict on raw rows: scores equal the model's on the encoded rows."""
    raw = tmp_path / "ratings.csv"
    rng = np.random.default_rng(0)
    n = 3000
    users, items = rng.integers(1, 60, n), rng.integers(1, 200, n)
    ratings = np.clip(np.round((users % 5 + items % 3) / 1.5 * 2) / 2 + 0.5, 0.5, 5.0)
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{u},{i},{r},{1000 + k}" for k, (u, i, r) in enumerate(zip(users, items, ratings))
    ]
    raw.write_text("\n".join(lines) + "\n")
    data = tmp_path / "ml"
    assert (
        main(
            [
                "prepare",
                "--format",
                "movielens",
                "--input",
                str(raw),
                "--out",
                str(data),
                "--min-count",
                "1",
            ]
        )
        == 0
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--loss",
                "ce",
                "--epochs",
                "1",
                "--embed-dim",
                "4",
                "--mlp",
                "8",
                "--out",
                str(run),
                "--progress",
                "off",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    new = tmp_path / "new.csv"
    new.write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n999999,1,3.0,6\n2,5,1.0,7\n")
    scores = tmp_path / "scores.csv"
    assert main(["predict", "--run", str(run), "--input", str(new), "--out", str(scores)]) == 0
    got = np.loadtxt(scores, delimiter=",", skiprows=1)
    assert got.shape == (3,) and np.all((got > 0) & (got < 1))
    from autoloss.data.encoder import RowEncoder

    enc = RowEncoder(data).encode_file(new)
    assert enc.x[1, 0] == 0  # an unseen user maps to the OOV id
    # A file streams through in chunks: the same CSV as in one chunk; a bad row in a later chunk
    # stops it with its line and leaves no output (the file appears only when every row scored).
    one, streamed = tmp_path / "one.csv", tmp_path / "streamed.csv"
    assert predict_file(run, raw, one) == n
    assert predict_file(run, raw, streamed, chunk_rows=256) == n
    assert one.read_bytes() == streamed.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text(raw.read_text() + "1,notanumber,4.0,5\n")
    with pytest.raises(DataError, match=f"bad.csv:{n + 2} "):
        predict_file(run, bad, tmp_path / "never.csv", chunk_rows=256)
    assert not (tmp_path / "never.csv").exists()
    r = load_run(run)
    with torch.no_grad():
        ref = torch.sigmoid(r.model(*enc.batch().inputs())).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-6)
