"""The non-finite guard: what a step, a prediction or the parameters hold that is not finite,
said in one line (:class:`~autoloss.errors.TrainingDiverged`) with what the run keeps and what to
do. ``train.on_nonfinite`` chooses between stopping and skipping a step whose loss is not finite.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from autoloss.errors import TrainingDiverged
from autoloss.policies.base import LossPolicy
from autoloss.train.rundir import RunDir


def kept(run_dir: RunDir | None) -> str:
    """What a stopped run keeps (its last good checkpoint, if it wrote one)."""
    if run_dir is not None and run_dir.checkpoint.exists():
        return f"the last good checkpoint is kept ({run_dir.checkpoint})"
    return "no checkpoint was written yet"


def diagnose(logits: torch.Tensor, y: torch.Tensor, policy: LossPolicy, loss: float) -> str:
    """Which quantity of a step is not finite: logits, candidate losses, the policy's weights."""
    parts = [f"the training loss is {loss}"]
    bad_rows = int((~torch.isfinite(logits)).reshape(len(y), -1).any(1).sum())
    if bad_rows:
        parts.append(f"the logits are not finite in {bad_rows} of {len(y)} rows")
    losses = policy.last_losses
    ok = (
        [True] * len(policy.candidates)
        if losses is None
        else torch.isfinite(losses).all(0).tolist()
    )
    cols = [n for n, good in zip(policy.candidates, ok) if not good]
    if cols:
        parts.append(f"candidate losses not finite: {', '.join(cols)}")
    weights = policy.last_weights
    if weights is not None and not bool(torch.isfinite(weights).all()):
        parts.append(f"the {policy.name} weights (controller output) are not finite")
    return "; ".join(parts)


def step_diverged(what: str, step: int, epoch: int, run_dir: RunDir | None) -> TrainingDiverged:
    """The error of a step whose loss is not finite (``train.on_nonfinite=stop``)."""
    again = "--resume" if run_dir is not None and run_dir.checkpoint.exists() else "rerun"
    return TrainingDiverged(
        f"training stopped at step {step} (epoch {epoch}): {what}; "
        + kept(run_dir)
        + f"; lower --lr, or {again} with --set train.on_nonfinite=skip to skip such batches"
    )


def check_predictions(logits: np.ndarray, split: str, step: int, run_dir: RunDir | None) -> None:
    """Non-finite predictions of ``split`` stop the run."""
    if not np.isfinite(logits).all():
        raise TrainingDiverged(
            f"training stopped at step {step}: the model's {split} predictions are not "
            f"finite ({int((~np.isfinite(logits)).sum())} values); "
            + kept(run_dir)
            + "; lower --lr"
        )


def check_parameters(model: nn.Module, step: int, run_dir: RunDir | None) -> None:
    """Non-finite parameters stop the run before they are saved (never a diverged checkpoint)."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingDiverged(
            f"training stopped at step {step}: parameters became non-finite "
            f"({', '.join(bad[:3])}); " + kept(run_dir)
        )
