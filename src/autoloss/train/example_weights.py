"""What a learnt per-example policy does to the training rows: a sample of its weights.

At the end of a run whose policy asks for it (``LossPolicy.weights_sample``: ``reweight``), the
trainer scores a seeded sample of training rows with the final recommender and policy, in
batches of the training batch size (the weights are normalised per batch, as in training), and
writes ``example_weights.npz`` to the run directory (:meth:`RunDir.save_example_weights`):

* ``prediction`` (N,) float32: the predicted probability of the row's *given* label;
* ``label`` (N,) int32: the given (possibly flipped) label;
* ``flipped`` (N,) bool: the label noise flipped it (all False where the run knows of none;
  ``knows_flips`` says which);
* ``weight`` (N,) float32: the row's total weight (the batch's mean is 1; 0 = switched off);
* ``candidate_weights`` (N, K) float32 and ``candidates`` (K,) str: per candidate.

The report plots weight against prediction for positives and negatives, clean and flipped rows
apart (docs/method.md, "Per-example weights").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedSplit
from autoloss.losses import example_ce
from autoloss.policies.base import LossPolicy

#: Rows in the sample (all of them for a smaller split).
SAMPLE_ROWS = 20_000


@torch.no_grad()
def sample_example_weights(
    model: nn.Module,
    policy: LossPolicy,
    split: EncodedSplit,
    *,
    flipped: np.ndarray | None,
    batch_size: int,
    seed: int,
    device: torch.device,
    rows: int = SAMPLE_ROWS,
) -> dict[str, np.ndarray]:
    """The arrays of ``example_weights.npz`` for ``rows`` seeded rows of ``split``."""
    was = model.training, policy.training
    model.eval()
    policy.eval()
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("prediction", "label", "flipped", "w")}
    seen = 0
    try:
        for batch in BatchIterator(split, batch_size, shuffle=True, seed=seed + 31337).epoch(0):
            b = batch.to(device)
            logits = model(*b.inputs())
            w = policy.probabilities(logits, b.y).float().cpu().numpy()
            given = torch.exp(-example_ce(logits, b.y)).float().cpu().numpy()  # p of the label
            idx = batch.rows.numpy() if batch.rows is not None else np.arange(len(batch))
            parts["prediction"].append(given)
            parts["label"].append(batch.y.numpy().astype(np.int32))
            parts["flipped"].append(np.zeros(len(idx), bool) if flipped is None else flipped[idx])
            parts["w"].append(w)
            seen += len(batch)
            if seen >= rows:
                break
    finally:
        model.train(was[0])
        policy.train(was[1])
    cw = np.concatenate(parts["w"])[:rows]
    return {
        "prediction": np.concatenate(parts["prediction"])[:rows],
        "label": np.concatenate(parts["label"])[:rows],
        "flipped": np.concatenate(parts["flipped"])[:rows],
        "knows_flips": np.array(flipped is not None),
        "weight": cw.sum(1).astype(np.float32),
        "candidate_weights": cw.astype(np.float32),
        "candidates": np.array(list(policy.candidates), dtype=str),
    }


def load_example_weights(path: Any) -> dict[str, np.ndarray]:
    """The arrays of an ``example_weights.npz`` (no pickles)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
