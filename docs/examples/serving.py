"""Serve an exported model: raw Criteo rows -> RowEncoder -> ONNX Runtime, checked against
``autoloss predict`` (same probabilities to 1e-5)."""

import csv
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from autoloss.cli import main
from autoloss.data.encoder import RowEncoder

with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    raw, new_rows = root / "train.txt", root / "new.txt"
    data, run, model = root / "data", root / "run", root / "model.onnx"

    # 1. A tiny synthetic Criteo file (label, I1..I13, C1..C26, tab-separated), prepared.
    assert main(["synth", "criteo", "--rows", "2000", "--out", str(raw), "--seed", "0"]) == 0
    assert main(["prepare", "--format", "criteo", "--input", str(raw), "--out", str(data)]) == 0

    # 2. A few training steps, then export to ONNX.
    train = ["train", "--data", str(data), "--out", str(run), "--model", "deepfm", "--loss", "ce"]
    train += ["--max-steps", "5", "--embed-dim", "8", "--mlp", "16"]
    assert main([*train, "--device", "cpu", "--progress", "off"]) == 0
    assert main(["export", "--run", str(run), "--format", "onnx", "--out", str(model)]) == 0

    # 3. New raw rows, in the training file's layout (the label column may be left out).
    lines = raw.read_text(encoding="utf-8").splitlines()[:50]
    new_rows.write_text("".join(line.split("\t", 1)[1] + "\n" for line in lines), "utf-8")

    # 4. Encode them with the dataset's vocabularies and score them with ONNX Runtime.
    encoded = RowEncoder(run / "dataset").encode_file(new_rows, labels=False)
    feeds = {"x": encoded.x.astype(np.int64)}  # (batch, categorical fields) int64
    if encoded.dense is not None:  # only for datasets with dense fields (float32)
        feeds["dense"] = encoded.dense.astype(np.float32)
    if encoded.bags is not None:  # only for datasets with multi-value fields (-1 = padding)
        feeds["bags"] = encoded.bags.astype(np.int64)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (prob,) = session.run(["prob"], feeds)  # binary task: (batch,) float32 P(y=1)

    # 5. The same rows through `autoloss predict` (a CSV with a `prob` column, 6 decimals).
    scores = root / "scores.csv"
    assert main(["predict", "--run", str(run), "--input", str(new_rows), "--out", str(scores)]) == 0
    with scores.open(newline="", encoding="utf-8") as fh:
        expected = np.array([float(r["prob"]) for r in csv.DictReader(fh)], dtype=np.float32)
    assert prob.shape == expected.shape == (50,)
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    print(f"scored {len(prob)} rows with ONNX Runtime; first: {prob[0]:.6f}; matches predict")
