"""The trainer: one loop for every loss method.

Each step: ``logits = model(batch)``; ``loss = policy(logits, y)`` (the loss policy is the
criterion: candidate losses, their weights, ``mean_b Σ_k w_bk ℓ_bk``) plus the model's
regularisation; one optimiser step; when the policy asks (``should_update``) it learns, on a
validation batch if it uses one. The trainer never asks which policy it runs: it uses the same
public criterion API a hand-written loop uses (docs/api.md).
"""

from __future__ import annotations

import itertools
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
import yaml
from torch import nn

from autoloss import __version__
from autoloss.data.batches import BatchIterator
from autoloss.data.conditions import ConditionedDataset, Conditions, apply_conditions
from autoloss.data.spec import Batch, FeatureSpec
from autoloss.data.store import EncodedDataset, check_trainable, open_dataset
from autoloss.data.store import identity as data_identity
from autoloss.errors import CheckpointError, ConfigError, TrainingDiverged
from autoloss.losses import evaluation_loss
from autoloss.metrics import evaluate as evaluate_logits
from autoloss.metrics import evaluate_logloss, fit_temperature
from autoloss.models import build_model
from autoloss.policies.base import LossPolicy
from autoloss.policies.registry import build_policy
from autoloss.train import capacity, distributed, heap
from autoloss.train.config import RESUMABLE_CHANGES, RunConfig
from autoloss.train.distributed import Batches
from autoloss.train.example_weights import sample_example_weights
from autoloss.train.optim import RecommenderOptimizer
from autoloss.train.rundir import RunDir

EvalCallback = Callable[[dict[str, Any]], None]
CHECKPOINT_FORMAT = "autoloss-checkpoint-3"
#: Checkpoint entries that differ between the ranks of a distributed run (saved for each).
_PER_RANK = ("rng", "epoch_loss")


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
    """The run's encoded dataset (``data.path``, or the embedded MovieLens default), with the
    data conditions of ``cfg.data`` applied (label noise, positive rate: docs/data.md); the
    dataset itself when none is set."""
    dataset = open_dataset(cfg.data.path, task=cfg.data.task)
    # Data conditions: the DataConfig keys as an autoloss.data Conditions (data does not
    # import train); the noise is drawn from train.seed unless data.noise_seed is set.
    d = cfg.data
    conditions = Conditions(
        label_noise=d.label_noise,
        noise_mode=d.noise_mode,
        noise_on_valid=d.noise_on_valid,
        noise_seed=d.noise_seed,
        pos_rate=d.pos_rate,
        meta_fraction=d.meta_fraction,
        meta_use=d.meta_use,
    )
    return apply_conditions(dataset, conditions, cfg.train.seed)


def run_threads(configured: int, ctx: distributed.Context | None = None) -> int:
    """The CPU threads a run computes with: ``configured`` (``train.num_threads``), or for 0
    (auto) this process's torch count, the machine's cores shared among the ranks of a
    distributed run on it. Results depend on it: a run records it and a resume keeps it."""
    if configured > 0:
        return configured
    if ctx is not None and ctx.device.type == "cpu":
        return distributed.threads_per_rank(ctx.local_world_size)
    return torch.get_num_threads()


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
        dense_init=m.dense_init,
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
        heap.trim()
    model.train(was_training)
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()


def model_regularization(model: nn.Module) -> torch.Tensor:
    """The model's penalty on the embedding rows of its last forward (0 if it has none)."""
    fn = getattr(model, "regularization", None)
    return fn() if callable(fn) else torch.zeros(())


class _ValidStream:
    """An endless stream of validation mini-batches, reshuffled each time it is exhausted.

    Its position (epoch, batches taken) travels in checkpoints, so a resumed run draws the same
    validation batches as an uninterrupted one.
    """

    def __init__(self, it: Batches, device: torch.device) -> None:
        self.it, self.device = it, device
        self.epoch, self.pos = 0, 0
        self._cur: Iterator[Batch] | None = None

    def next(self) -> Batch:
        for _ in range(2):
            if self._cur is None:
                self._cur = iter(self.it.epoch(self.epoch, start=self.pos))
            try:
                batch = next(self._cur)
            except StopIteration:
                self._cur, self.epoch, self.pos = None, self.epoch + 1, 0
                continue
            self.pos += 1
            return batch.to(self.device)
        raise ConfigError(
            "the validation split is empty; a learnt loss policy needs validation rows"
        )

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._cur = int(state["epoch"]), int(state["pos"]), None


class _EpochLoss:
    """Running means of the epoch's training objective (the policy's mixture) and of the plain
    logloss of the same batches (comparable with the validation logloss), kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device)
        self.plain = torch.zeros((), device=device)
        self.n = 0

    def add(self, loss: torch.Tensor, plain: torch.Tensor) -> None:
        self.total += loss.detach()
        self.plain += plain.detach()
        self.n += 1

    def mean(self) -> tuple[float, float]:
        return float(self.total) / max(self.n, 1), float(self.plain) / max(self.n, 1)

    def state(self) -> dict[str, Any]:
        return {"total": self.total.detach().cpu(), "plain": self.plain.detach().cpu(), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.total = state["total"].to(self.total.device)
        self.plain = state["plain"].to(self.plain.device)
        self.n = int(state["n"])


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": (str(np_state[0]), torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy(), *rest))
    random.setstate(_tuples(state["python"]))


def _tuples(obj: Any) -> Any:
    """``random.setstate`` wants tuples where a saved state may hold lists."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, list | tuple) else obj


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
        cfg.validate()
        #: the distributed run this trainer is one rank of (None: one process, docs/distributed.md)
        self.dist = distributed.context()
        if self.dist is not None:
            distributed.check_config(cfg)
            self._join_run(self.dist)
        #: CPU threads of this process (result.json's ``threads``; docs/reliability.md)
        self.threads = run_threads(cfg.train.num_threads, self.dist)
        torch.set_num_threads(self.threads)
        if cfg.train.heap == "keep":
            heap.keep_freed_memory()
        self.device = resolve_device(cfg.train.device)
        if self.dist is not None:
            self.device = distributed.rank_device(cfg.train.device, self.dist.local_rank)
        self.dataset = dataset or run_dataset(cfg)
        data_warnings = check_trainable(
            self.dataset, 1 if self.dist is None else self.dist.world_size
        )
        self.spec = self.dataset.spec
        seed_everything(cfg.train.seed)
        capacity.check_fits(self.spec, cfg.model.embed_dim, self.device)
        self.model = capacity.out_of_memory(
            lambda: build_recommender(cfg, self.spec).to(self.device), f"the {cfg.model.name} model"
        )
        self.policy: LossPolicy = build_policy(
            cfg.loss,
            self.spec.task,
            self.spec.num_classes,
            total_steps=self.planned_steps(),
            split_rows=(
                len(self.dataset.split("train")),
                len(self.dataset.split(self.policy_split)),
            ),
        ).to(self.device)
        self.optimizer = RecommenderOptimizer(
            self.model,
            cfg.optim.lr,
            cfg.optim.embedding_lr,
            cfg.optim.weight_decay,
            lazy=cfg.optim.lazy_embeddings,
            clip_norm=cfg.optim.clip_norm,
        )
        self._replicas: distributed.Replicas | None = None
        if self.dist is not None:
            self._replicas = distributed.Replicas(
                self.dist, self.model, self.policy, cfg.train.seed
            )
        #: result.json's ``method`` and extra ``policy`` fields (an outer loop may set them).
        self.method = cfg.loss.method
        self.policy_info: dict[str, Any] = {}
        self.step = 0
        self.rows_seen = 0
        self.epoch = 0
        self.best: dict[str, Any] = {"auc": -math.inf, "logloss": math.inf, "epoch": 0, "step": 0}
        self.bad_evals = 0
        self.train_seconds = 0.0
        self.history: list[dict[str, Any]] = []
        self._best_state: dict[str, torch.Tensor] | None = None
        self._valid: _ValidStream | None = None
        # Where the run is, for checkpoints taken inside an epoch.
        self.in_epoch = False  # an epoch is under way (self.epoch, its first epoch_batches done)
        self.epoch_batches = 0
        self.finished = False  # training is over; only finish() remains
        self.nonfinite_skipped = 0
        self.warnings: list[str] = data_warnings
        for warning in data_warnings:
            self.log(f"warning: {warning}")
        self._base_logloss: float | None = None
        self._epoch_loss = _EpochLoss(self.device)
        self._last_checkpoint = time.monotonic()

    def _join_run(self, ctx: distributed.Context) -> None:
        """One rank of a distributed run: rank 0 alone logs."""
        if not ctx.is_main:
            self.log = lambda s: None

    @property
    def policy_split(self) -> str:
        """The split learnt policies update on: ``meta`` where ``data.meta_fraction`` made one,
        else ``valid`` (which then also selects)."""
        return "meta" if "meta" in self.dataset.split_names else "valid"

    def planned_steps(self) -> int:
        """The recommender steps the run is planned for (epochs, or ``max_steps`` when smaller)."""
        t = self.cfg.train
        total = len(self._iterator("train", train=True)) * t.epochs
        return min(total, t.max_steps) if t.max_steps > 0 else total

    # ------------------------------------------------------------------ batches
    def _iterator(self, split: str, *, train: bool) -> Batches:
        bs = self.cfg.optim.batch_size if train else self.cfg.data.eval_batch_size
        it = BatchIterator(
            self.dataset.split(split),
            bs,
            shuffle=train,
            seed=self.cfg.train.seed + (0 if split == "train" else 7919),
            block_rows=self.cfg.data.block_rows,
        )
        if self.dist is None:
            return it
        return distributed.ShardedBatches(it, self.dist.rank, self.dist.world_size)

    def evaluate_split(self, split: str) -> dict[str, float]:
        logits, y = self.predict_split(split)
        return evaluate_logits(y, logits, self.spec.task)

    def predict_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of a whole split (eval mode); non-finite logits stop the run."""
        if self._replicas is not None:
            logits, y = self._predict_shards(split, self._replicas)
        else:
            it = BatchIterator(
                self.dataset.split(split), self.cfg.data.eval_batch_size, shuffle=False
            )
            logits, y = predict_logits(self.model, iter(it.epoch(0)), self.device)
        if not np.isfinite(logits).all():
            raise TrainingDiverged(
                f"training stopped at step {self.step}: the model's {split} predictions are not "
                f"finite ({int((~np.isfinite(logits)).sum())} values); "
                + _kept(self.run_dir)
                + "; lower --lr"
            )
        return logits, y

    def _predict_shards(
        self, split: str, replicas: distributed.Replicas
    ) -> tuple[np.ndarray, np.ndarray]:
        """A distributed run's :meth:`predict_split`: each rank scores a contiguous part of the
        split (no row twice, none padded) and every rank gets all of them in the split's order."""
        ctx = replicas.ctx
        rows = len(self.dataset.split(split))
        size = max(1, min(self.cfg.data.eval_batch_size, -(-rows // ctx.world_size)))
        it = BatchIterator(self.dataset.split(split), size, shuffle=False)
        first, last = distributed.eval_batches(len(it), ctx.rank, ctx.world_size)
        if last > first:
            batches = itertools.islice(it.epoch(0, start=first), last - first)
            logits, y = predict_logits(self.model, batches, self.device)
        else:  # fewer batches than ranks: this one scores none
            classes = () if self.spec.task == "binary" else (self.spec.num_classes,)
            logits, y = np.zeros((0, *classes), np.float32), np.zeros(0, np.int64)
        return replicas.gather_predictions(logits, y)

    def _check_divergence(self, logloss: float) -> None:
        """Warn (once) when the model predicts far worse than the label frequencies would."""
        if self._base_logloss is None:
            y = np.asarray(self.dataset.split("valid").y)
            freq = np.bincount(y, minlength=self.spec.num_classes) / max(len(y), 1)
            self._base_logloss = float(-(freq[freq > 0] * np.log(freq[freq > 0])).sum())
        base = self._base_logloss
        if logloss > 2 * base + 0.1 and not self.warnings:
            self.warnings.append(
                f"validation logloss {logloss:.4f} is far worse than predicting the label "
                f"frequencies ({base:.4f}): training may have diverged (optim.lr = "
                f"{self.cfg.optim.lr:g})"
            )
            self.log(f"warning: {self.warnings[-1]}")

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: Batch) -> torch.Tensor | None:
        """One recommender step on ``batch``, then the policy's own step when it asks.

        Returns the loss, or None for a batch skipped because its loss was not finite
        (``train.on_nonfinite=skip``; with ``stop`` that raises :class:`TrainingDiverged`).
        """
        model, policy = self.model, self.policy
        logits = model(*batch.inputs())
        loss = policy(logits, batch.y, rows=batch.rows) + model_regularization(model)
        finite = bool(torch.isfinite(loss))
        rows, replicas = len(batch), self._replicas
        if replicas is not None:  # a batch is skipped on every rank or on none
            finite, rows = replicas.agree_step(finite, rows)
        if finite:
            self._epoch_loss.add(loss, evaluation_loss(logits.detach(), batch.y))
            self.optimizer.zero_grad()
            loss.backward()
            if replicas is not None:
                replicas.average_gradients(len(batch))
            self.optimizer.step()
            rec = self._update_policy(batch) if policy.should_update(self.step) else {}
        else:
            self._nonfinite_loss(logits, batch.y, loss)
        if replicas is not None:
            replicas.average_buffers()
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
        what = _diagnose(logits.detach(), y, self.policy, float(loss.detach()))
        if self.cfg.train.on_nonfinite == "stop":
            again = (
                "--resume"
                if self.run_dir is not None and self.run_dir.checkpoint.exists()
                else "rerun"
            )
            raise TrainingDiverged(
                f"training stopped at step {self.step + 1} (epoch {self.epoch}): {what}; "
                + _kept(self.run_dir)
                + f"; lower --lr, or {again} with --set train.on_nonfinite=skip to skip such batches"
            )
        self.nonfinite_skipped += 1
        self._record({"type": "nonfinite", "step": self.step + 1, "skipped": True, "what": what})

    def _valid_stream(self) -> _ValidStream:
        if self._valid is None:
            self._valid = _ValidStream(self._iterator(self.policy_split, train=True), self.device)
        return self._valid

    def _update_policy(self, batch: Batch) -> dict[str, float]:
        if not self.policy.uses_validation:
            if self._replicas is not None:
                self._replicas.policy_rows = len(batch)
            return self.policy.update()
        vb = self._valid_stream().next()
        if self._replicas is not None:
            self._replicas.policy_rows = len(vb)
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
        rec = {
            "type": "eval",
            "split": "valid",
            "epoch": self.epoch,
            "step": self.step,
            "rows": self.rows_seen,
            "train_loss": train_loss,
            "train_logloss": train_logloss,
            "train_seconds": round(self.train_seconds, 3),
            **m,
        }
        self._record(rec)
        self._check_divergence(m["logloss"])
        improved = _better(m, self.best, self.cfg.train.select_by)
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
            if self.cfg.optim.lr_decay_on_plateau < 1:
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
        return self.bad_evals >= self.cfg.train.patience

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything a resume needs to continue exactly where the run is now."""
        state: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "position": {
                "step": self.step,
                "epoch": self.epoch,
                "in_epoch": self.in_epoch,
                "epoch_batches": self.epoch_batches,
                "finished": self.finished,
                "rows_seen": self.rows_seen,
                "train_seconds": self.train_seconds,
                "nonfinite_skipped": self.nonfinite_skipped,
                "warnings": list(self.warnings),
            },
            "epoch_loss": self._epoch_loss.state(),
            "valid_stream": None if self._valid is None else self._valid.state(),
            "best": {k: float(v) for k, v in self.best.items()},
            "bad_evals": self.bad_evals,
            "best_state": self._best_state,
            "rng": _rng_state(self.device),
            # what the run computes: a resume refuses an edited config.yaml or another dataset
            "settings": yaml.safe_dump(self.cfg.to_dict(), sort_keys=True),
            "data_identity": self._data_identity(),
        }
        if self._replicas is not None:  # each rank's own random stream and running loss
            state["world_size"] = self._replicas.ctx.world_size
            state["ranks"] = self._replicas.gather_states({k: state[k] for k in _PER_RANK})
        return state

    def save_checkpoint(self) -> None:
        """Write checkpoint.pt (atomically) if the run has a directory; never a diverged state."""
        if self.run_dir is None:
            return
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDiverged(
                f"training stopped at step {self.step}: parameters became non-finite "
                f"({', '.join(bad[:3])}); " + _kept(self.run_dir)
            )
        self.run_dir.save_checkpoint(self.checkpoint_state())
        self._last_checkpoint = time.monotonic()

    def _checkpoint_due(self) -> bool:
        cfg = self.cfg.train
        if self.run_dir is None:
            return False
        if cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0:
            return True
        minutes = cfg.checkpoint_minutes
        due = minutes > 0 and time.monotonic() - self._last_checkpoint >= 60 * minutes
        if self._replicas is None or minutes <= 0:
            return due
        return self._replicas.main_decides(due)  # clocks differ; checkpoints are collective

    def load_checkpoint(self, run_dir: RunDir) -> None:
        """Continue from ``run_dir``'s checkpoint; its log is cut back to the checkpoint's step."""
        state = run_dir.load_checkpoint()
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT!r} "
                "(written by another version of autoloss): rerun with --overwrite",
                path=run_dir.checkpoint,
            )
        self._check_world_size(state, run_dir)
        self._check_identity(state, run_dir)
        if self.dist is not None and "ranks" in state:
            state = {**state, **state["ranks"][self.dist.rank]}
        try:
            self.model.load_state_dict(state["model"])
            self.policy.load_state_dict(state["policy"])
            self.optimizer.load_state_dict(state["optimizer"])
            self._load_position(state)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint does not match this run: {str(exc).splitlines()[0]}",
                path=run_dir.checkpoint,
            ) from None
        damaged = run_dir.truncate_records(self.step)
        if damaged:
            self.log(f"warning: {run_dir.metrics}: {damaged} damaged line(s) dropped")

    def _load_position(self, state: dict[str, Any]) -> None:
        pos = state["position"]
        self.step, self.epoch = int(pos["step"]), int(pos["epoch"])
        self.in_epoch, self.epoch_batches = bool(pos["in_epoch"]), int(pos["epoch_batches"])
        self.finished = bool(pos["finished"])
        self.rows_seen, self.train_seconds = int(pos["rows_seen"]), float(pos["train_seconds"])
        self.nonfinite_skipped = int(pos["nonfinite_skipped"])
        self.warnings = [str(w) for w in pos["warnings"]]
        self._epoch_loss.load(state["epoch_loss"])
        if state["valid_stream"] is not None:
            self._valid_stream().load(state["valid_stream"])
        self.best = dict(state["best"])
        self.best["epoch"] = int(self.best["epoch"])
        self.best["step"] = int(self.best["step"])
        self.bad_evals = int(state["bad_evals"])
        self._best_state = state.get("best_state")
        _set_rng_state(state["rng"], self.device)

    def _data_identity(self) -> str:
        meta_file = Path(self.dataset.path) / "meta.json"
        return data_identity(json.loads(meta_file.read_text(encoding="utf-8")))

    def _check_identity(self, state: dict[str, Any], run_dir: RunDir) -> None:
        """A checkpoint resumes the settings and the data it was written with: config.yaml
        edited since, or the dataset prepared again, is refused, naming what changed.
        (Checkpoints written before they recorded both are not checked.)"""
        if "settings" in state:
            saved = RunConfig.from_dict(yaml.safe_load(state["settings"]))
            diff = saved.differences(self.cfg, ignore=RESUMABLE_CHANGES | {"data.path"})
            if diff:
                shown = "; ".join(diff[:3]) + (
                    f"; and {len(diff) - 3} more" if len(diff) > 3 else ""
                )
                raise CheckpointError(
                    f"{run_dir.config.name} was changed after the checkpoint was written "
                    f"({shown}): restore those settings to resume, or start again with --overwrite",
                    path=run_dir.path,
                )
        if "data_identity" in state and state["data_identity"] != self._data_identity():
            raise CheckpointError(
                f"the dataset {self.dataset.path} is not the one this run started on (prepared "
                "again since the checkpoint: its meta.json differs): resume on the original "
                "dataset, or start again with --overwrite",
                path=run_dir.path,
            )

    def _check_world_size(self, state: dict[str, Any], run_dir: RunDir) -> None:
        """A checkpoint resumes at the world size that wrote it (its shards and streams)."""
        saved = int(state.get("world_size", 1))
        now = 1 if self.dist is None else self.dist.world_size
        if saved != now:
            raise CheckpointError(
                f"the checkpoint was written by a run of {saved} process(es), this run has {now}: "
                f"resume it with {saved} (autoloss train --nproc {saved} --resume, or torchrun "
                f"--nproc_per_node/--nnodes giving {saved} in all)",
                path=run_dir.checkpoint,
            )

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train until the epoch budget, ``max_steps`` or early stopping; return the result.

        A checkpoint is written at the end of every epoch, every ``train.checkpoint_every`` steps
        and every ``train.checkpoint_minutes``; a run loaded from one continues exactly there.
        """
        cfg = self.cfg.train
        train_it = self._iterator("train", train=True)
        main = self.dist is None or self.dist.is_main
        progress = _progress(cfg.progress, len(train_it) * cfg.epochs, self.step) if main else None
        self.model.train()
        stop = self.finished or (
            not self.in_epoch and (self.epoch >= cfg.epochs or self.bad_evals >= cfg.patience)
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
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
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
                stop = self._evaluate_and_track(*self._train_losses())
                t0 = time.perf_counter()
                if stop or limit:
                    return True
            if self._checkpoint_due():
                self.train_seconds += time.perf_counter() - t0
                self.save_checkpoint()
                t0 = time.perf_counter()
        self.train_seconds += time.perf_counter() - t0
        stop = False
        if cfg.eval_every_steps <= 0 or self.step % cfg.eval_every_steps != 0:
            stop = self._evaluate_and_track(*self._train_losses())
        return stop or self.epoch >= cfg.epochs

    def _train_losses(self) -> tuple[float, float]:
        """The epoch's mean training objective and logloss so far (averaged over the ranks)."""
        loss, logloss = self._epoch_loss.mean()
        if self._replicas is not None:
            loss, logloss = self._replicas.mean([loss, logloss])
        return loss, logloss

    def _example_weights(self) -> dict[str, np.ndarray]:
        """A sample of the training rows' weights under the final policy (example_weights.npz)."""
        return sample_example_weights(
            self.model,
            self.policy,
            self.dataset.split("train"),
            flipped=self.dataset.flipped("train"),
            batch_size=self.cfg.optim.batch_size,
            seed=self.cfg.train.seed,
            device=self.device,
        )

    def finish(self) -> dict[str, Any]:
        valid_logits, valid_y = self.predict_split("valid")
        valid = evaluate_logits(valid_y, valid_logits, self.spec.task)
        test: dict[str, float] = {}
        if "test" in self.dataset.split_names:
            # Calibration compared like with like: a temperature fitted on validation.
            t = fit_temperature(valid_y, valid_logits, self.spec.task)
            test_logits, test_y = self.predict_split("test")
            test = evaluate_logits(test_y, test_logits, self.spec.task)
            test["logloss_ts"] = evaluate_logloss(test_y, test_logits / t, self.spec.task)
            test["temperature"] = t
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
            "threads": self.threads,
            "policy": {**self.policy.describe(), **self.policy_info},
            "autoloss_version": __version__,
        }
        if self.dist is not None:
            result["world_size"] = self.dist.world_size
        if self.nonfinite_skipped:
            result["nonfinite_skipped"] = self.nonfinite_skipped
        if self.warnings:
            result["warnings"] = list(self.warnings)
        if isinstance(self.dataset, ConditionedDataset):  # data conditions on (docs/data.md)
            result["conditions"] = self.dataset.conditions_summary()
        if self.run_dir is not None:
            self.run_dir.save_weights(self.model.state_dict(), self.policy.controller_state())
            if self.policy.weights_sample:
                self.run_dir.save_example_weights(self._example_weights())
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


def _kept(run_dir: RunDir | None) -> str:
    if run_dir is not None and run_dir.checkpoint.exists():
        return f"the last good checkpoint is kept ({run_dir.checkpoint})"
    return "no checkpoint was written yet"


def _diagnose(logits: torch.Tensor, y: torch.Tensor, policy: LossPolicy, loss: float) -> str:
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


def _better(m: dict[str, float], best: dict[str, Any], select_by: str) -> bool:
    """Whether validation metrics ``m`` improve on ``best`` (higher AUC or lower logloss)."""
    if select_by == "logloss":
        return m["logloss"] < best["logloss"]
    return m["auc"] > best["auc"]
