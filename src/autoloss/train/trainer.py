"""The trainer: one loop for every loss method.

Each step: ``logits = model(batch)``; ``loss = policy(logits, y)`` (the loss policy is the
criterion: candidate losses, their weights, ``mean_b Σ_k w_bk ℓ_bk``) plus the model's
regularisation; one optimiser step; when the policy asks (``should_update``) it learns, on a
validation batch if it uses one. The trainer never asks which policy it runs: it uses the same
public criterion API a hand-written loop uses (docs/api.md).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss import __version__
from autoloss.data.batches import BatchIterator
from autoloss.data.spec import Batch, FeatureSpec
from autoloss.data.store import EncodedDataset, open_dataset
from autoloss.errors import CheckpointError, ConfigError
from autoloss.metrics import evaluate as evaluate_logits
from autoloss.models import build_model
from autoloss.policies.base import LossPolicy
from autoloss.policies.registry import build_policy
from autoloss.train.config import RunConfig
from autoloss.train.optim import RecommenderOptimizer
from autoloss.train.rundir import RunDir

EvalCallback = Callable[[dict[str, Any]], None]
CHECKPOINT_FORMAT = "autoloss-checkpoint-2"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an unavailable explicit CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dataset(cfg: RunConfig) -> EncodedDataset:
    """The run's encoded dataset (``data.path``, or the embedded MovieLens default)."""
    return open_dataset(cfg.data.path, task=cfg.data.task)


def build_recommender(cfg: RunConfig, spec: FeatureSpec) -> nn.Module:
    m = cfg.model
    return build_model(
        m.name,
        spec,
        embed_dim=m.embed_dim,
        mlp=tuple(m.mlp),
        dropout=m.dropout,
        batch_norm=m.batch_norm,
        embedding_l2=m.embedding_l2,
        **m.extra,
    )


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
    model.train(was_training)
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()


def model_regularization(model: nn.Module) -> torch.Tensor:
    """The model's penalty on the embedding rows of its last forward (0 if it has none)."""
    fn = getattr(model, "regularization", None)
    return fn() if callable(fn) else torch.zeros(())


class _ValidStream:
    """An endless stream of validation mini-batches, reshuffled each time it is exhausted."""

    def __init__(self, it: BatchIterator, device: torch.device) -> None:
        self.it, self.device, self.epoch = it, device, 0
        self._cur: Iterator[Batch] = iter(())

    def next(self) -> Batch:
        for _ in range(2):
            try:
                return next(self._cur).to(self.device)
            except StopIteration:
                self._cur = iter(self.it.epoch(self.epoch))
                self.epoch += 1
        raise ConfigError(
            "the validation split is empty; a learnt loss policy needs validation rows"
        )


class _EpochLoss:
    """Running mean of the training loss (kept on the device: no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device)
        self.n = 0

    def add(self, loss: torch.Tensor) -> None:
        self.total += loss.detach()
        self.n += 1

    def mean(self) -> float:
        return float(self.total) / max(self.n, 1)


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
        self.log = log or (lambda s: print(s, flush=True))
        if cfg.train.num_threads > 0:
            torch.set_num_threads(cfg.train.num_threads)
        self.device = resolve_device(cfg.train.device)
        self.dataset = dataset or run_dataset(cfg)
        self.spec = self.dataset.spec
        seed_everything(cfg.train.seed)
        self.model = build_recommender(cfg, self.spec).to(self.device)
        self.policy: LossPolicy = build_policy(cfg.loss, self.spec.task, self.spec.num_classes).to(
            self.device
        )
        self.optimizer = RecommenderOptimizer(
            self.model, cfg.optim.lr, cfg.optim.embedding_lr, cfg.optim.weight_decay
        )
        #: result.json's ``method`` and extra ``policy`` fields (an outer loop may set them).
        self.method = cfg.loss.method
        self.policy_info: dict[str, Any] = {}
        self.step = 0
        self.rows_seen = 0
        self.epoch = 0
        self.best: dict[str, Any] = {"auc": -math.inf, "epoch": 0, "step": 0}
        self.bad_evals = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self._valid: _ValidStream | None = None

    # ------------------------------------------------------------------ batches
    def _iterator(self, split: str, *, train: bool) -> BatchIterator:
        bs = self.cfg.optim.batch_size if train else self.cfg.data.eval_batch_size
        return BatchIterator(
            self.dataset.split(split),
            bs,
            shuffle=train,
            seed=self.cfg.train.seed + (0 if split == "train" else 7919),
            block_rows=self.cfg.data.block_rows,
        )

    def evaluate_split(self, split: str) -> dict[str, float]:
        it = BatchIterator(self.dataset.split(split), self.cfg.data.eval_batch_size, shuffle=False)
        logits, y = predict_logits(self.model, iter(it.epoch(0)), self.device)
        return evaluate_logits(y, logits, self.spec.task)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Batch) -> torch.Tensor:
        """One recommender step on ``batch``, then the policy's own step when it asks."""
        model, policy = self.model, self.policy
        logits = model(*batch.inputs())
        loss = policy(logits, batch.y) + model_regularization(model)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        rec = self._update_policy(batch) if policy.should_update(self.step) else {}
        self.step += 1
        self.rows_seen += len(batch)
        if self.step % max(1, self.cfg.train.log_every) == 0:
            stats = policy.stats()
            if stats or rec:
                self._record(
                    {"type": "policy", "step": self.step, "rows": self.rows_seen, **stats, **rec}
                )
        return loss

    def _update_policy(self, batch: Batch) -> dict[str, float]:
        if not self.policy.uses_validation:
            return self.policy.update()
        if self._valid is None:
            self._valid = _ValidStream(self._iterator("valid", train=True), self.device)
        vb = self._valid.next()
        return self.policy.update(
            self.model,
            vb.inputs(),
            vb.y,
            train_batch=(batch.inputs(), batch.y),
            regularization=model_regularization,
        )

    # ------------------------------------------------------------------ records
    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.run_dir is not None:
            self.run_dir.append_record(rec)

    def _evaluate_and_track(self, train_loss: float) -> bool:
        """Validation evaluation; returns True when training should stop (patience)."""
        t0 = time.perf_counter()
        m = self.evaluate_split("valid")
        rec = {
            "type": "eval",
            "split": "valid",
            "epoch": self.epoch,
            "step": self.step,
            "rows": self.rows_seen,
            "train_loss": train_loss,
            "train_seconds": round(self.train_seconds, 3),
            **m,
        }
        self._record(rec)
        improved = m["auc"] > self.best["auc"]
        if improved:
            self.best = {
                "auc": m["auc"],
                "logloss": m["logloss"],
                "epoch": self.epoch,
                "step": self.step,
            }
            self.bad_evals = 0
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_evals += 1
        self.log(
            f"epoch {self.epoch} step {self.step}: train loss {train_loss:.4f} | valid AUC "
            f"{m['auc']:.4f} logloss {m['logloss']:.4f}{' *' if improved else ''} | "
            f"{self.rows_seen / max(self.train_seconds, 1e-9):,.0f} rows/s "
            f"(eval {time.perf_counter() - t0:.1f}s)"
        )
        if self.on_eval is not None:
            self.on_eval(rec)
        return self.bad_evals >= self.cfg.train.patience

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "rows_seen": self.rows_seen,
            "train_seconds": self.train_seconds,
            "best": {k: float(v) for k, v in self.best.items()},
            "bad_evals": self.bad_evals,
            "best_state": self._best_state,
            "torch_rng": torch.get_rng_state(),
        }

    def load_checkpoint(self, run_dir: RunDir) -> None:
        state = run_dir.load_checkpoint()
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT!r} "
                "(written by another version of autoloss): rerun with --overwrite",
                path=run_dir.checkpoint,
            )
        try:
            self.model.load_state_dict(state["model"])
            self.policy.load_state_dict(state["policy"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint does not match this run: {str(exc).splitlines()[0]}",
                path=run_dir.checkpoint,
            ) from None
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.rows_seen = int(state["rows_seen"])
        self.train_seconds = float(state["train_seconds"])
        self.best = dict(state["best"])
        self.best["epoch"] = int(self.best["epoch"])
        self.best["step"] = int(self.best["step"])
        self.bad_evals = int(state["bad_evals"])
        self._best_state = state.get("best_state")
        torch.set_rng_state(state["torch_rng"])

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train until the epoch budget, ``max_steps`` or early stopping; return the result."""
        train_it = self._iterator("train", train=True)
        progress = _progress(
            self.cfg.train.progress, len(train_it) * self.cfg.train.epochs, self.step
        )
        stop = self.epoch >= self.cfg.train.epochs or self.bad_evals >= self.cfg.train.patience
        self.model.train()
        while not stop:
            self.epoch += 1
            stop = self._train_epoch(train_it.epoch(self.epoch - 1), progress)
            if self.run_dir is not None:
                self.run_dir.save_checkpoint(self.checkpoint_state())
        if progress is not None:
            progress.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.finish()

    def _train_epoch(self, batches: Iterator[Batch], progress: Any) -> bool:
        """One epoch (evaluating every ``eval_every_steps`` and at its end); True: stop training."""
        cfg = self.cfg.train
        epoch_loss = _EpochLoss(self.device)
        t0 = time.perf_counter()
        for batch in batches:
            loss = self.train_step(batch.to(self.device, non_blocking=True))
            epoch_loss.add(loss)
            _show_progress(progress, self, loss, t0)
            limit = cfg.max_steps > 0 and self.step >= cfg.max_steps
            if limit or (cfg.eval_every_steps > 0 and self.step % cfg.eval_every_steps == 0):
                self.train_seconds += time.perf_counter() - t0
                stop = self._evaluate_and_track(epoch_loss.mean())
                t0 = time.perf_counter()
                if stop or limit:
                    return True
        self.train_seconds += time.perf_counter() - t0
        stop = False
        if cfg.eval_every_steps <= 0 or self.step % cfg.eval_every_steps != 0:
            stop = self._evaluate_and_track(epoch_loss.mean())
        return stop or self.epoch >= cfg.epochs

    def finish(self) -> dict[str, Any]:
        valid = self.evaluate_split("valid")
        test = self.evaluate_split("test") if "test" in self.dataset.split_names else {}
        result: dict[str, Any] = {
            "test": test,
            "valid": valid,
            "best_epoch": int(self.best["epoch"]),
            "best_step": int(self.best["step"]),
            "epochs": self.epoch,
            "steps": self.step,
            "train_rows": self.rows_seen,
            "train_seconds": round(self.train_seconds, 3),
            "train_rows_per_second": round(self.rows_seen / max(self.train_seconds, 1e-9), 1),
            "method": self.method,
            "model": self.cfg.model.name,
            "seed": self.cfg.train.seed,
            "task": self.spec.task,
            "candidates": list(self.policy.candidates),
            "device": str(self.device),
            "policy": {**self.policy.describe(), **self.policy_info},
            "autoloss_version": __version__,
        }
        if self.run_dir is not None:
            self.run_dir.save_weights(self.model.state_dict(), self.policy.controller_state())
            self.run_dir.finish(result)
        return result


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
