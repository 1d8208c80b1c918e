"""The end of a run: the final evaluation (validation, then the test split with temperature
scaling), its :class:`~autoloss.train.result.RunResult`, and with a run directory the files of a
finished run (model.pt, controller.pt, example_weights.npz, result.json)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from autoloss import __version__
from autoloss.data.conditions import ConditionedDataset
from autoloss.metrics import evaluate as evaluate_logits
from autoloss.train.calibration import scaled_test_metrics
from autoloss.train.example_weights import sample_example_weights
from autoloss.train.result import RunResult

if TYPE_CHECKING:
    from autoloss.train.trainer import Trainer


def finish_run(trainer: Trainer) -> RunResult:
    """Evaluate ``trainer``'s model (its best state, restored) and write the finished run."""
    task = trainer.spec.task
    valid_pred = trainer.predict_split("valid")
    valid = evaluate_logits(valid_pred[1], valid_pred[0], task)
    test: dict[str, float] = {}
    if "test" in trainer.dataset.split_names:
        test = scaled_test_metrics(valid_pred, lambda: trainer.predict_split("test"), task)
    result = run_result(trainer, test, valid)
    rd = trainer.run_dir
    if rd is not None:
        model_state, tables = trainer.sync.model_state(trainer.model, rd)  # sharded: apart
        rd.save_weights(model_state, trainer.policy.controller_state(), tables=tables)
        if trainer.policy.weights_sample:
            rd.save_example_weights(example_weights(trainer))
        rd.finish(result)
    return result


def run_result(trainer: Trainer, test: dict[str, float], valid: dict[str, float]) -> RunResult:
    """``trainer``'s result with the final metrics ``test`` and ``valid``."""
    t = trainer
    data = t.dataset  # with data conditions (docs/data.md): they are recorded
    conditions = data.conditions_summary() if isinstance(data, ConditionedDataset) else None
    return RunResult(
        test=test,
        valid=valid,
        best_epoch=int(t.best["epoch"]),
        best_step=int(t.best["step"]),
        epochs=t.epoch,
        steps=t.step,
        train_rows=t.rows_seen,
        train_seconds=round(t.train_seconds, 3),
        train_rows_per_second=round(t.rows_seen / max(t.train_seconds, 1e-9), 1),
        method=t.method,
        model=t.cfg.model.name,
        seed=t.cfg.train.seed,
        task=t.spec.task,
        candidates=list(t.policy.candidates),
        device=str(t.device),
        threads=t.threads,
        policy={**t.policy.describe(), **t.policy_info},
        autoloss_version=__version__,
        world_size=t.sync.world_size if t.sync.world_size > 1 else None,
        nonfinite_skipped=t.nonfinite_skipped,
        warnings=list(t.warnings),
        conditions=conditions,
    )


def example_weights(trainer: Trainer) -> dict[str, np.ndarray]:
    """A sample of the training rows' weights under the final policy (example_weights.npz)."""
    return sample_example_weights(
        trainer.model,
        trainer.policy,
        trainer.dataset.split("train"),
        flipped=trainer.dataset.flipped("train"),
        batch_size=trainer.cfg.optim.batch_size,
        seed=trainer.cfg.train.seed,
        device=trainer.device,
    )
