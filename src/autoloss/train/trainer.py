"""The trainer: one loop for every loss method.

Each step: ``logits = model(batch)``; ``loss = policy(logits, y)`` (the loss policy is the
criterion: candidate losses, their weights, ``mean_b Σ_k w_bk ℓ_bk``) plus the model's
regularisation; one optimiser step; when the policy asks (``should_update``) it learns, on a
validation batch if it uses one. The trainer never asks which policy it runs: it uses the same
public criterion API a hand-written loop uses (docs/api.md); nor whether it is one process of
several: the synchronisation is its :class:`~autoloss.train.sync.StepSync`.

What it is built from is :mod:`~autoloss.train.builder`'s; the checkpoint format is
:mod:`~autoloss.train.checkpoint`'s, the non-finite guard :mod:`~autoloss.train.nonfinite`'s,
temperature scaling :mod:`~autoloss.train.calibration`'s, result.json
:class:`~autoloss.train.result.RunResult`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data.spec import Batch
from autoloss.data.store import EncodedDataset
from autoloss.losses import evaluation_loss
from autoloss.metrics import evaluate as evaluate_logits
from autoloss.train import checkpoint, nonfinite, outcome
from autoloss.train.builder import (
    batches,
    build_recommender,
    build_run,
    policy_split,
    resolve_device,
    run_dataset,
    run_threads,
    seed_everything,
)
from autoloss.train.checkpoint import CHECKPOINT_FORMAT
from autoloss.train.config import RunConfig
from autoloss.train.distributed import Batches
from autoloss.train.evaluation import DivergenceWatch, EarlyStopping, eval_record, predict_logits
from autoloss.train.result import RunResult
from autoloss.train.rundir import RunDir
from autoloss.train.streams import EpochLoss as _EpochLoss
from autoloss.train.streams import ValidStream as _ValidStream

_logger = logging.getLogger(__name__)


def _loggers(log: Callable[[str], None] | None) -> tuple[Callable[[str], None], ...]:
    """(progress, warnings): the caller's ``log`` for both (warnings prefixed), else this
    module's logger (the command line shows its INFO lines on stdout, WARNING on stderr)."""
    if log is None:
        return _logger.info, _logger.warning
    return log, lambda s: log(f"warning: {s}")


__all__ = [
    "CHECKPOINT_FORMAT",
    "EvalCallback",
    "Trainer",
    "build_recommender",
    "model_regularization",
    "predict_logits",
    "resolve_device",
    "run_dataset",
    "run_threads",
    "seed_everything",
]

EvalCallback = Callable[[dict[str, Any]], None]


def model_regularization(model: nn.Module) -> torch.Tensor:
    """The model's penalty on the embedding rows of its last forward (0 if it has none)."""
    fn = getattr(model, "regularization", None)
    return fn() if callable(fn) else torch.zeros(())


class Trainer:
    """Trains one model with one loss policy on one encoded dataset.

    ``run_dir=None`` trains in memory (the weight search's trials do).
    ``on_eval`` receives every validation record; it may raise to stop training (pruning).
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        run_dir: RunDir | None = None,
        dataset: EncodedDataset | None = None,
        on_eval: EvalCallback | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.on_eval = on_eval
        self.log, self.warn = _loggers(log)
        parts = build_run(cfg, dataset)
        #: the synchronisation of the processes of the run (none for one: docs/distributed.md)
        self.sync = parts.sync
        if not self.sync.is_main:  # one rank of a distributed run: rank 0 alone logs
            self.log = self.warn = lambda s: None
        #: CPU threads of this process (result.json's ``threads``; docs/reliability.md)
        self.threads, self.device = parts.threads, parts.device
        self.dataset, self.spec = parts.dataset, parts.dataset.spec
        self.model, self.policy, self.optimizer = parts.model, parts.policy, parts.optimizer
        #: result.json's ``method`` and extra ``policy`` fields (an outer loop may set them).
        self.method = cfg.loss.method
        self.policy_info: dict[str, Any] = {}
        self.stopping = EarlyStopping(cfg.train.select_by, cfg.train.patience)
        self.history: list[dict[str, Any]] = []
        self._valid: _ValidStream | None = None
        # Where the run is (checkpoint.POSITION), for checkpoints taken inside an epoch.
        self.step = self.rows_seen = self.epoch = 0
        self.in_epoch = False  # an epoch is under way (self.epoch, its first epoch_batches done)
        self.epoch_batches = 0
        self.finished = False  # training is over; only finish() remains
        self.train_seconds = 0.0
        self.nonfinite_skipped = 0
        self.warnings: list[str] = parts.warnings
        for warning in parts.warnings:
            self.warn(warning)
        self._divergence = DivergenceWatch(self.dataset, cfg.optim.lr)
        self._epoch_loss = _EpochLoss(self.device)
        self._clock = checkpoint.CheckpointClock(cfg.train, self.sync)

    @property
    def best(self) -> dict[str, Any]:
        """The best validation metrics so far, with their epoch and step."""
        return self.stopping.best

    @property
    def policy_split(self) -> str:
        """The split learnt policies update on (``meta`` or ``valid``)."""
        return policy_split(self.dataset)

    def _mean_losses(self) -> list[float]:  # the epoch's so far, averaged over the ranks
        return self.sync.mean(self._epoch_loss.mean())

    def _iterator(self, split: str, *, train: bool) -> Batches:
        return batches(self.cfg, self.dataset, self.sync, split, train=train)

    # ------------------------------------------------------------------ evaluation
    def evaluate_split(self, split: str) -> dict[str, float]:
        logits, y = self.predict_split(split)
        return evaluate_logits(y, logits, self.spec.task)

    def predict_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of a whole split (eval mode); non-finite logits stop the run."""
        bs = self.cfg.data.eval_batch_size
        logits, y = self.sync.predict(self.model, self.dataset, split, bs, self.device)
        nonfinite.check_predictions(logits, split, self.step, self.run_dir)
        return logits, y

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Batch) -> torch.Tensor | None:
        """One recommender step on ``batch``, then the policy's own step when it asks.

        Returns the loss, or None for a batch skipped because its loss was not finite
        (``train.on_nonfinite=skip``; with ``stop`` that raises :class:`TrainingDiverged`).
        """
        model, policy, sync = self.model, self.policy, self.sync
        logits = model(*batch.inputs())
        loss = policy(logits, batch.y, rows=batch.rows) + model_regularization(model)
        finite, rows = sync.agree_step(bool(torch.isfinite(loss)), len(batch))
        rec: dict[str, float] = {}
        if finite:
            self._epoch_loss.add(loss, evaluation_loss(logits.detach(), batch.y))
            self.optimizer.zero_grad()
            loss.backward()
            sync.after_backward(len(batch))
            self.optimizer.step()
            rec = self._update_policy(batch) if policy.should_update(self.step) else {}
        else:
            self._nonfinite_loss(logits, batch.y, loss)
        sync.after_step()
        self.step += 1
        self.rows_seen += rows
        if self.step % self.cfg.train.log_every == 0 and finite:
            stats = policy.stats()
            if stats or rec:
                self._record(
                    {"type": "policy", "step": self.step, "rows": self.rows_seen, **stats, **rec}
                )
        return loss if finite else None

    def _nonfinite_loss(self, logits: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        what = nonfinite.diagnose(logits.detach(), y, self.policy, float(loss.detach()))
        if self.cfg.train.on_nonfinite == "stop":
            raise nonfinite.step_diverged(what, self.step + 1, self.epoch, self.run_dir)
        self.nonfinite_skipped += 1
        self._record({"type": "nonfinite", "step": self.step + 1, "skipped": True, "what": what})

    def _valid_stream(self) -> _ValidStream:
        if self._valid is None:
            self._valid = _ValidStream(self._iterator(self.policy_split, train=True), self.device)
        return self._valid

    def _update_policy(self, batch: Batch) -> dict[str, float]:
        if not self.policy.uses_validation:
            self.sync.policy_rows(len(batch))
            return self.policy.update()
        vb = self._valid_stream().next()
        self.sync.policy_rows(len(vb))
        return self.policy.update(
            self.model,
            vb.inputs(),
            vb.y,
            train_batch=(batch.inputs(), batch.y, batch.rows),
            regularization=model_regularization,
            valid_rows=vb.rows,
        )

    # ------------------------------------------------------------------ records
    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.run_dir is not None:
            self.run_dir.append_record(rec)

    def _evaluate_and_track(self, train_loss: float, train_logloss: float = math.nan) -> bool:
        """Validation evaluation; returns True when training should stop (patience)."""
        t0 = time.perf_counter()
        m = self.evaluate_split("valid")
        where = {"epoch": self.epoch, "step": self.step, "rows": self.rows_seen}
        rec = eval_record(where, train_loss, train_logloss, self.train_seconds, m)
        self._record(rec)
        warning = self._divergence.check(m["logloss"], first=not self.warnings)
        if warning is not None:
            self.warnings.append(warning)
            self.warn(warning)
        improved = self.stopping.observe(m, self.epoch, self.step, self.model)
        if not improved and self.cfg.optim.lr_decay_on_plateau < 1:
            lr = self.optimizer.decay_lr(self.cfg.optim.lr_decay_on_plateau)
            self.log(f"no improvement: learning rate now {lr:g}")
        self.log(
            f"epoch {self.epoch} step {self.step}: train loss {train_loss:.4f} "
            f"(logloss {train_logloss:.4f}) | valid AUC "
            f"{m['auc']:.4f} logloss {m['logloss']:.4f}{' *' if improved else ''} | "
            f"{self.rows_seen / max(self.train_seconds, 1e-9):,.0f} rows/s "
            f"(eval {time.perf_counter() - t0:.1f}s)"
        )
        if self.on_eval is not None:
            self.on_eval(rec)
        return self.stopping.exhausted

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resume needs to continue exactly where the run is now."""
        return checkpoint.collect(self)

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (atomically) if the run has a directory; never a diverged state."""
        if self.run_dir is not None:
            checkpoint.save(self, self.run_dir)
            self._clock.restart()

    def load_checkpoint(self, run_dir: RunDir) -> None:
        """Continue from ``run_dir``'s checkpoint; its log is cut back to the checkpoint's step."""
        checkpoint.restore(self, run_dir)
        damaged = run_dir.truncate_records(self.step)
        if damaged:
            self.warn(f"{run_dir.metrics}: {damaged} damaged line(s) dropped")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> RunResult:
        """Train until the epoch budget, ``max_steps`` or early stopping; return the result.

        A checkpoint is written at the end of every epoch, every ``train.checkpoint_every`` steps
        and every ``train.checkpoint_minutes``; a run loaded from one continues exactly there.
        """
        cfg = self.cfg.train
        train_it = self._iterator("train", train=True)
        total = len(train_it) * cfg.epochs
        progress = _progress(cfg.progress, total, self.step) if self.sync.is_main else None
        self.model.train()
        stop = self.finished or (
            not self.in_epoch and (self.epoch >= cfg.epochs or self.stopping.exhausted)
        )
        while not stop:
            if not self.in_epoch:
                self.epoch += 1
                self.in_epoch, self.epoch_batches = True, 0
                self._epoch_loss = _EpochLoss(self.device)
            stop = self._train_epoch(train_it, progress)
            self.in_epoch = False
            self.finished = stop
            self.save_checkpoint()
        if progress is not None:
            progress.close()
        if self.stopping.best_state is not None:
            self.model.load_state_dict(self.stopping.best_state)
        return self.finish()

    def _train_epoch(self, train_it: Batches, progress: Any) -> bool:
        """The rest of epoch ``self.epoch`` (evaluating every ``eval_every_steps`` and at its
        end, checkpointing when due); True: stop training."""
        cfg = self.cfg.train
        t0 = time.perf_counter()
        for batch in train_it.epoch(self.epoch - 1, start=self.epoch_batches):
            loss = self.train_step(batch.to(self.device, non_blocking=True))
            self.epoch_batches += 1
            if loss is not None:
                _show_progress(progress, self, loss, t0)
            limit = cfg.max_steps > 0 and self.step >= cfg.max_steps
            if limit or (cfg.eval_every_steps > 0 and self.step % cfg.eval_every_steps == 0):
                self.train_seconds += time.perf_counter() - t0
                stop = self._evaluate_and_track(*self._mean_losses())
                t0 = time.perf_counter()
                if stop or limit:
                    return True
            if self.run_dir is not None and self._clock.due(self.step):
                self.train_seconds += time.perf_counter() - t0
                self.save_checkpoint()
                t0 = time.perf_counter()
        self.train_seconds += time.perf_counter() - t0
        stop = False
        if cfg.eval_every_steps <= 0 or self.step % cfg.eval_every_steps != 0:
            stop = self._evaluate_and_track(*self._mean_losses())
        return stop or self.epoch >= cfg.epochs

    # ------------------------------------------------------------------ the end
    def finish(self) -> RunResult:
        """The final evaluation; with a run directory, the weights and result.json written."""
        return outcome.finish_run(self)


def _progress(mode: str, total: int, initial: int) -> Any:
    show = sys.stderr.isatty() if mode == "auto" else mode == "on"
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="batch", dynamic_ncols=True, leave=False)


def _show_progress(progress: Any, trainer: Trainer, loss: torch.Tensor, t0: float) -> None:
    if progress is None:
        return
    progress.update(1)
    if trainer.step % 20 == 0:
        elapsed = trainer.train_seconds + time.perf_counter() - t0
        progress.set_postfix(
            loss=f"{float(loss):.4f}", rows_s=f"{trainer.rows_seen / max(elapsed, 1e-9):,.0f}"
        )
