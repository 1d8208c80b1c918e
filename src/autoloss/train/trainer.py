"""The trainer: one loop for every loss method.

Each step: logits = model(batch); losses = candidates(logits, y) (B, K); weights = policy(...)
(B, K); loss = mean_b sum_k w*l (+ embedding regularisation); one optimiser step. Every f steps a
policy that learns on validation data gets a validation batch. The trainer never asks which policy
it runs.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss import __version__
from autoloss.data.batches import BatchIterator
from autoloss.data.spec import Batch, FeatureSpec
from autoloss.data.store import EncodedDataset
from autoloss.errors import CheckpointError, ConfigError
from autoloss.metrics import evaluate as evaluate_logits
from autoloss.models import build_model
from autoloss.policies import LossPolicy, PolicyInput, UpdateContext, build_policy
from autoloss.train.checkpoint import load_state
from autoloss.train.config import RunConfig
from autoloss.train.optim import RecommenderOptimizer

EvalCallback = Callable[[dict[str, Any]], None]


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


def open_dataset(cfg: RunConfig) -> EncodedDataset:
    if cfg.data.path is None:
        from autoloss.data.embedded import default_dataset

        return EncodedDataset(default_dataset(cfg.data.task))
    return EncodedDataset(cfg.data.path)


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


def model_regularization(model: nn.Module) -> torch.Tensor | float:
    """The model's penalty on the embedding rows of its last forward (0 if it has none)."""
    fn = getattr(model, "regularization", None)
    return fn() if callable(fn) else 0.0


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


class Trainer:
    """Trains one model with one loss policy on one encoded dataset.

    ``run_dir=None`` trains in memory (used by the weight search for its trials).
    ``on_eval`` receives every validation record; it may raise to stop training (pruning).
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        run_dir: Path | None = None,
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
        self.dataset = dataset or open_dataset(cfg)
        self.spec = self.dataset.spec
        seed_everything(cfg.train.seed)
        self.model = build_recommender(cfg, self.spec).to(self.device)
        self.policy: LossPolicy = build_policy(cfg.loss, self.spec.task).to(self.device)
        self.candidates = self.policy.candidates
        self.optimizer = RecommenderOptimizer(
            self.model, cfg.optim.lr, cfg.optim.embedding_lr, cfg.optim.weight_decay
        )
        self.step = 0
        self.rows_seen = 0
        self.epoch = 0
        self.best: dict[str, Any] = {"auc": -math.inf, "epoch": 0, "step": 0}
        self.bad_evals = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._best_state: dict[str, torch.Tensor] | None = None

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

    def training_loss(
        self, model: nn.Module, batch: Batch, weights_fn: Callable[[PolicyInput], torch.Tensor]
    ) -> torch.Tensor:
        """The recommender's training objective on a batch, for a given weighting."""
        logits = model(*batch.inputs())
        losses = self.candidates(logits, batch.y)
        w = weights_fn(PolicyInput(logits, batch.y, losses, self.step))
        return (w * losses).sum(1).mean() + model_regularization(model)

    # ------------------------------------------------------------------ records
    def _record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.run_dir is not None:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")

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
            "format": "autoloss-checkpoint-1",
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

    def load_checkpoint(self, path: Path) -> None:
        state = load_checkpoint_file(path)
        try:
            self.model.load_state_dict(state["model"])
            self.policy.load_state_dict(state["policy"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint does not match this run: {str(exc).splitlines()[0]}", path=path
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
        cfg = self.cfg
        before = getattr(self.policy, "before_training", None)
        if before is not None:
            before(self)
        train_it = self._iterator("train", train=True)
        valid_stream = (
            _ValidStream(self._iterator("valid", train=True), self.device)
            if self.policy.update_every > 0
            else None
        )
        f = self.policy.update_every
        log_every = max(1, cfg.train.log_every)
        eval_every = cfg.train.eval_every_steps
        progress = _progress(cfg.train.progress, len(train_it) * cfg.train.epochs, self.step)
        stop = self.epoch >= cfg.train.epochs or self.bad_evals >= cfg.train.patience
        model, policy, opt, cands = self.model, self.policy, self.optimizer, self.candidates
        model.train()
        while not stop:
            self.epoch += 1
            loss_sum = torch.zeros((), device=self.device)
            loss_n = 0
            t_epoch = time.perf_counter()
            for batch in train_it.epoch(self.epoch - 1):
                batch = batch.to(self.device, non_blocking=True)
                logits = model(*batch.inputs())
                losses = cands(logits, batch.y)
                inp = PolicyInput(logits, batch.y, losses, self.step)
                weights = policy.weights(inp)
                loss = (weights * losses).sum(1).mean() + model_regularization(model)
                opt.zero_grad()
                policy.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                policy.after_backward(self.step)
                self.step += 1
                self.rows_seen += len(batch)
                loss_sum += loss.detach()
                loss_n += 1
                rec: dict[str, Any] = {}
                if f > 0 and self.step % f == 0 and valid_stream is not None:
                    rec = policy.update(
                        UpdateContext(
                            model=model,
                            candidates=cands,
                            train_batch=batch,
                            valid_batch=valid_stream.next(),
                            step=self.step,
                            model_lr=cfg.optim.lr,
                            train_loss=self.training_loss,
                        )
                    )
                if self.step % log_every == 0:
                    stats = policy.stats(inp, weights)
                    if stats or rec:
                        self._record(
                            {
                                "type": "policy",
                                "step": self.step,
                                "rows": self.rows_seen,
                                **stats,
                                **rec,
                            }
                        )
                if progress is not None:
                    progress.update(1)
                    if self.step % 20 == 0:
                        el = self.train_seconds + time.perf_counter() - t_epoch
                        progress.set_postfix(
                            loss=f"{float(loss):.4f}",
                            rows_s=f"{self.rows_seen / max(el, 1e-9):,.0f}",
                        )
                limit = cfg.train.max_steps > 0 and self.step >= cfg.train.max_steps
                if limit or (eval_every > 0 and self.step % eval_every == 0):
                    self.train_seconds += time.perf_counter() - t_epoch
                    stop = self._evaluate_and_track(float(loss_sum) / max(loss_n, 1))
                    t_epoch = time.perf_counter()
                    if stop or limit:
                        stop = True
                        break
            else:
                self.train_seconds += time.perf_counter() - t_epoch
                if eval_every <= 0 or self.step % eval_every != 0:
                    stop = self._evaluate_and_track(float(loss_sum) / max(loss_n, 1))
                stop = stop or self.epoch >= cfg.train.epochs
            if self.run_dir is not None:
                torch.save(self.checkpoint_state(), self.run_dir / "checkpoint.pt")
        if progress is not None:
            progress.close()
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        return self.finish()

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
            "method": self.cfg.loss.method,
            "model": self.cfg.model.name,
            "seed": self.cfg.train.seed,
            "task": self.spec.task,
            "candidates": list(self.candidates.names),
            "device": str(self.device),
            "policy": self.policy.describe(),
            "autoloss_version": __version__,
        }
        if self.run_dir is not None:
            save_weights(self.run_dir, self.model, self.policy, self.spec)
            (self.run_dir / "checkpoint.pt").unlink(missing_ok=True)
            (self.run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return result


def _progress(mode: str, total: int, initial: int) -> Any:
    show = sys.stderr.isatty() if mode == "auto" else mode == "on"
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="batch", dynamic_ncols=True, leave=False)


def save_weights(run_dir: Path, model: nn.Module, policy: LossPolicy, spec: FeatureSpec) -> None:
    torch.save(
        {"format": "autoloss-model-1", "state_dict": model.state_dict()}, run_dir / "model.pt"
    )
    ctrl = policy.controller_state()
    if ctrl is not None:
        torch.save(ctrl, run_dir / "controller.pt")


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """A run's saved state (``weights_only=True``), with a clear error for a missing, corrupt or
    foreign file."""
    state = load_state(path, "checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError("not an autoloss checkpoint", path=path)
    return state
