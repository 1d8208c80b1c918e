"""Tiny encoded datasets written directly in the documented directory format (docs/architecture.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_encoded_dataset(
    root: Path,
    *,
    rows: int = 3000,
    vocab: tuple[int, ...] = (20, 30, 10, 50),
    num_classes: int = 2,
    seed: int = 0,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Path:
    """A learnable synthetic dataset: the label depends on field 0, field 1 and their interaction."""
    rng = np.random.default_rng(seed)
    x = np.stack([rng.integers(0, v, rows) for v in vocab], axis=1).astype(np.int32)
    w0 = rng.normal(0, 1.5, vocab[0])
    w1 = rng.normal(0, 1.5, vocab[1])
    inter = rng.normal(0, 1.0, (vocab[0], vocab[1]))
    score = w0[x[:, 0]] + w1[x[:, 1]] + inter[x[:, 0], x[:, 1]]
    if num_classes == 2:
        y = (rng.random(rows) < 1 / (1 + np.exp(-score))).astype(np.int32)
    else:
        cuts = np.quantile(
            score + rng.normal(0, 0.5, rows), np.linspace(0, 1, num_classes + 1)[1:-1]
        )
        y = np.searchsorted(cuts, score).astype(np.int32)
    root.mkdir(parents=True, exist_ok=True)
    n_train = int(rows * split[0])
    n_valid = int(rows * split[1])
    bounds = {
        "train": (0, n_train),
        "valid": (n_train, n_train + n_valid),
        "test": (n_train + n_valid, rows),
    }
    for name, (a, b) in bounds.items():
        d = root / name
        d.mkdir(exist_ok=True)
        np.save(d / "x.npy", x[a:b])
        np.save(d / "y.npy", y[a:b])
    fields = [
        {"name": f"f{i}", "kind": "categorical", "vocab_size": int(v)} for i, v in enumerate(vocab)
    ]
    meta = {
        "format_version": 1,
        "format": "synthetic",
        "task": "binary" if num_classes == 2 else "multiclass",
        "num_classes": num_classes,
        "label": "label",
        "fields": fields,
        "splits": {k: b - a for k, (a, b) in bounds.items()},
        "protocol": {"seed": seed},
        "inputs": [],
    }
    (root / "meta.json").write_text(json.dumps(meta))
    vd = root / "vocab"
    vd.mkdir(exist_ok=True)
    for f in fields:
        values = [str(i) for i in range(1, f["vocab_size"])]
        (vd / f"{f['name']}.json").write_text(
            json.dumps({"field": f["name"], "kind": "categorical", "values": values})
        )
    return root
