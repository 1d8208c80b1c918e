"""Evaluation during training: scoring a split, early stopping (the best model so far, patience)
and the warning of a run that predicts worse than the label frequencies."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data.spec import Batch
from autoloss.data.store import EncodedDataset
from autoloss.train import heap


@torch.no_grad()
def predict_logits(
    model: nn.Module, batches: Iterator[Batch], device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a whole split, in eval mode."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for b in batches:
        b = b.to(device)
        outs.append(model(*b.inputs()).float().cpu())
        ys.append(b.y.cpu())
        heap.trim()
    model.train(was_training)
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()


def eval_record(
    where: dict[str, int],
    train_loss: float,
    train_logloss: float,
    train_seconds: float,
    m: dict[str, float],
) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of a validation evaluation ``m`` at ``where`` (epoch, step,
    rows) with the epoch's training losses so far."""
    return {
        "type": "eval",
        "split": "valid",
        **where,
        "train_loss": train_loss,
        "train_logloss": train_logloss,
        "train_seconds": round(train_seconds, 3),
        **m,
    }


def better(m: dict[str, float], best: dict[str, Any], select_by: str) -> bool:
    """Whether validation metrics ``m`` improve on ``best`` (higher AUC or lower logloss)."""
    if select_by == "logloss":
        return m["logloss"] < best["logloss"]
    return m["auc"] > best["auc"]


class EarlyStopping:
    """The best validation metrics so far (``train.select_by``), the model's state then, and the
    evaluations since without improvement (``train.patience``)."""

    def __init__(self, select_by: str, patience: int) -> None:
        self.select_by, self.patience = select_by, patience
        self.best: dict[str, Any] = {"auc": -math.inf, "logloss": math.inf, "epoch": 0, "step": 0}
        self.bad_evals = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    @property
    def exhausted(self) -> bool:
        """Patience is spent: training should stop."""
        return self.bad_evals >= self.patience

    def observe(self, m: dict[str, float], epoch: int, step: int, model: nn.Module) -> bool:
        """Record an evaluation; True when it improved (the model's state is then kept)."""
        if not better(m, self.best, self.select_by):
            self.bad_evals += 1
            return False
        self.best = {"auc": m["auc"], "logloss": m["logloss"], "epoch": epoch, "step": step}
        self.bad_evals = 0
        self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def state(self) -> dict[str, Any]:
        """The checkpoint entries ``best``, ``bad_evals`` and ``best_state``."""
        return {
            "best": {k: float(v) for k, v in self.best.items()},
            "bad_evals": self.bad_evals,
            "best_state": self.best_state,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.best = dict(state["best"])
        self.best["epoch"] = int(self.best["epoch"])
        self.best["step"] = int(self.best["step"])
        self.bad_evals = int(state["bad_evals"])
        self.best_state = state.get("best_state")


def label_frequency_logloss(y: np.ndarray, num_classes: int) -> float:
    """The logloss of predicting the label frequencies of ``y`` (a run far above it diverged)."""
    freq = np.bincount(y, minlength=num_classes) / max(len(y), 1)
    return float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())


class DivergenceWatch:
    """Whether the validation logloss is far worse than predicting the label frequencies of the
    validation split would be (computed on first use): training may have diverged."""

    def __init__(self, dataset: EncodedDataset, lr: float) -> None:
        self.dataset, self.lr = dataset, lr
        self.base: float | None = None

    def check(self, logloss: float, *, first: bool) -> str | None:
        """The warning for ``logloss``, or None; only when ``first`` (no warning given yet)."""
        if self.base is None:
            y = np.asarray(self.dataset.split("valid").y)
            self.base = label_frequency_logloss(y, self.dataset.spec.num_classes)
        if not (logloss > 2 * self.base + 0.1 and first):
            return None
        return (
            f"validation logloss {logloss:.4f} is far worse than predicting the label "
            f"frequencies ({self.base:.4f}): training may have diverged (optim.lr = {self.lr:g})"
        )
