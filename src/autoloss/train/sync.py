"""What keeps the processes of a run in step, behind one interface for the training loop.

:class:`StepSync` is a run of one process: every method does nothing (or returns its input), so
single-process training is unchanged bit for bit. :class:`DistributedSync` is one rank of a
``torch.distributed`` run (docs/distributed.md): the batch shards, the agreement on skipped
steps, the row-weighted gradient averaging, the averaged running statistics, gathered evaluation
and per-rank checkpoint entries, all done by :class:`~autoloss.train.replicas.Replicas`.
The trainer calls the same methods either way and never asks which one it holds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedDataset
from autoloss.train import distributed, replicas, sharded, table_files
from autoloss.train.config import RunConfig
from autoloss.train.distributed import Batches
from autoloss.train.evaluation import predict_logits
from autoloss.train.rundir import RunDir


class StepSync:
    """One process: nothing to synchronise."""

    world_size = 1
    is_main = True
    #: how many processes share the embedding tables (their memory divides by it)
    table_shards = 1

    def place(self, model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
        """The model just built, on ``device`` (its embedding tables too)."""
        return model.to(device)

    def attach(self, model: nn.Module, policy: nn.Module, seed: int) -> None:
        """Called once the model and the policy exist (a distributed run aligns the replicas)."""

    def shard(self, batches: BatchIterator) -> Batches:
        """This process's part of every global batch (all of it)."""
        return batches

    def agree_step(self, finite: bool, rows: int) -> tuple[bool, int]:
        """(the step's loss is finite everywhere, the rows of the global batch)."""
        return finite, rows

    def after_backward(self, rows: int) -> None:
        """The recommender's gradients of this process's ``rows``, made the global batch's."""

    def policy_rows(self, rows: int) -> None:
        """The rows of the batch the policy's next step learns from (weights its gradients)."""

    def after_step(self) -> None:
        """After every step (taken or skipped): running statistics made the same everywhere."""

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean over the processes of each of ``values``."""
        return list(values)

    def main_decides(self, flag: bool) -> bool:
        """The main process's ``flag`` (a decision taken on a clock)."""
        return flag

    def add_rank_states(self, state: dict[str, Any], keys: Sequence[str]) -> None:
        """Add every process's entries ``keys`` of a checkpoint ``state`` (and the world size)."""

    def own_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A loaded checkpoint with this process's own per-process entries."""
        return state

    def predict(
        self, model: nn.Module, dataset: EncodedDataset, split: str, batch_size: int, device: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of the whole ``split`` of ``dataset``, in its order."""
        it = BatchIterator(dataset.split(split), batch_size, shuffle=False)
        return predict_logits(model, iter(it.epoch(0)), device)

    def save_tables(self, state: dict[str, Any], run_dir: RunDir, step: int) -> None:
        """Before ``state`` (a checkpoint) is written: tables kept apart from it go to their own
        files (here, none: the tables are in ``state["model"]``)."""

    def checkpoint_written(self, state: dict[str, Any], run_dir: RunDir) -> None:
        """After checkpoint ``state`` was written (the tables of older ones may go)."""

    def warnings(self, cfg: RunConfig) -> list[str]:
        """What this placement of the tables changes in ``cfg``'s training, worth saying."""
        return []

    def placement(self, model: nn.Module) -> dict[str, Any] | None:
        """Where the embedding tables live, when they are sharded (None: in every process)."""
        return None

    def load_tables(self, state: dict[str, Any], run_dir: RunDir) -> dict[str, Any]:
        """A loaded checkpoint ``state`` with the tables :meth:`save_tables` kept apart."""
        return state

    def model_state(self, model: nn.Module, run_dir: RunDir) -> tuple[dict[str, Any], str | None]:
        """(the state ``model.pt`` holds, the directory beside it that holds the tables apart:
        here none, the tables are in the state)."""
        return model.state_dict(), None


class DistributedSync(StepSync):
    """One rank of a distributed run (``ctx``)."""

    def __init__(self, ctx: distributed.Context) -> None:
        self.ctx = ctx
        self.world_size = ctx.world_size
        self.is_main = ctx.is_main
        self.replicas: replicas.Replicas | None = None

    def attach(self, model: nn.Module, policy: nn.Module, seed: int) -> None:
        self.replicas = replicas.Replicas(self.ctx, model, policy, seed)

    def _r(self) -> replicas.Replicas:
        assert self.replicas is not None, "attach() first"
        return self.replicas

    def shard(self, batches: BatchIterator) -> Batches:
        return replicas.ShardedBatches(batches, self.ctx.rank, self.ctx.world_size)

    def agree_step(self, finite: bool, rows: int) -> tuple[bool, int]:
        return self._r().agree_step(finite, rows)  # a batch is skipped on every rank or on none

    def after_backward(self, rows: int) -> None:
        self._r().average_gradients(rows)

    def policy_rows(self, rows: int) -> None:
        self._r().policy_rows = rows

    def after_step(self) -> None:
        self._r().average_buffers()

    def mean(self, values: Sequence[float]) -> list[float]:
        return self._r().mean(values)

    def main_decides(self, flag: bool) -> bool:
        return self._r().main_decides(flag)  # clocks differ; checkpoints are collective

    def add_rank_states(self, state: dict[str, Any], keys: Sequence[str]) -> None:
        state["world_size"] = self.ctx.world_size
        state["ranks"] = self._r().gather_states({k: state[k] for k in keys})

    def own_state(self, state: dict[str, Any]) -> dict[str, Any]:
        if "ranks" not in state:
            return state
        return {**state, **state["ranks"][self.ctx.rank]}

    def predict(
        self, model: nn.Module, dataset: EncodedDataset, split: str, batch_size: int, device: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each rank scores a contiguous part of the split (no row twice, none padded) and every
        rank gets all of them in the split's order."""
        ctx = self.ctx
        rows = len(dataset.split(split))
        size = max(1, min(batch_size, -(-rows // ctx.world_size)))
        it = BatchIterator(dataset.split(split), size, shuffle=False)
        first, last = replicas.eval_batches(len(it), ctx.rank, ctx.world_size)
        if last > first:
            batches = itertools.islice(it.epoch(0, start=first), last - first)
            logits, y = predict_logits(model, batches, device)
        else:  # fewer batches than ranks: this one scores none
            spec = dataset.spec
            classes = () if spec.task == "binary" else (spec.num_classes,)
            logits, y = np.zeros((0, *classes), np.float32), np.zeros(0, np.int64)
        return self._r().gather_predictions(logits, y)


class ShardedSync(DistributedSync):
    """One process of a run whose embedding tables are sharded by TorchRec (a world of one
    process included): each table lives on one process (:mod:`autoloss.train.sharded`), the
    rest is replicated as in :class:`DistributedSync`. Every process runs every forward pass
    (a sharded lookup is a collective), so evaluation cuts each batch between them."""

    def __init__(self, ctx: distributed.Context) -> None:
        super().__init__(ctx)
        self.table_shards = ctx.world_size
        self.model: nn.Module | None = None
        self.dmp: Any = None

    def place(self, model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
        """The dense part on ``device``, each table on the process that owns it."""
        sharded.move_dense(model, device)
        self.model, self.dmp = model, sharded.shard(model, cfg, self.ctx, device)
        return model

    def agree_step(self, finite: bool, rows: int) -> tuple[bool, int]:
        finite, total = super().agree_step(finite, rows)
        assert self.model is not None, "place() first"
        sharded.set_grad_scale(self.model, rows / max(total, 1))
        return finite, total

    def predict(
        self, model: nn.Module, dataset: EncodedDataset, split: str, batch_size: int, device: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each batch of the split cut between the processes (a process without a row of it
        scores a stand-in row and drops it), gathered back into the split's order."""
        ctx = self.ctx
        it = BatchIterator(dataset.split(split), batch_size, shuffle=False)
        logits, ys, order, start = [], [], [], 0
        for batch in it.epoch(0):
            lo, hi = replicas.shard_bounds(len(batch), ctx.rank, ctx.world_size)
            part = (
                replicas.batch_part(batch, lo, hi) if hi > lo else replicas.batch_part(batch, 0, 1)
            )
            out, y = predict_logits(model, iter([part]), device)
            logits.append(out[: hi - lo])
            ys.append(y[: hi - lo])
            for r in range(ctx.world_size):
                a, b = replicas.shard_bounds(len(batch), r, ctx.world_size)
                order.append((r, np.arange(start + a, start + b)))
            start += len(batch)
        gathered = self._r().gather_predictions(np.concatenate(logits), np.concatenate(ys))
        where = np.concatenate([rows for _, rows in sorted(order, key=lambda o: o[0])])
        out_logits, out_y = np.empty_like(gathered[0]), np.empty_like(gathered[1])
        out_logits[where], out_y[where] = gathered
        return out_logits, out_y

    def save_tables(self, state: dict[str, Any], run_dir: RunDir, step: int) -> None:
        """The sharded tables (now and at the best evaluation) and their optimiser's state go to
        ``checkpoint-tables/step-N`` (``torch.distributed.checkpoint``: each process its shards);
        checkpoint.pt keeps the rest and the directory's name."""
        state["model"], tables = sharded.split_state(state["model"])
        state["best_state"], best = sharded.split_state(state.get("best_state"))
        optim = self.dmp.fused_optimizer.state_dict()
        state["tables"] = table_files.save_tables(
            run_dir.path, step, {"model": tables, "best": best, "optim": optim}, self.ctx
        )

    def warnings(self, cfg: RunConfig) -> list[str]:
        if cfg.optim.clip_norm <= 0:
            return []
        return [
            f"optim.clip_norm={cfg.optim.clip_norm:g} clips the dense layers' gradients only: the "
            "sharded tables' optimiser runs inside the backward pass (set it to 0 to say so)"
        ]

    def placement(self, model: nn.Module) -> dict[str, Any] | None:
        """Each process's tables and the bytes of their rows, and the bytes every process would
        hold with replicated tables (collective)."""
        mine = sharded.local_tables(model)
        ranks = self._r().gather_states(mine)
        return {
            "embeddings": "sharded",
            "world_size": self.ctx.world_size,
            "ranks": ranks,
            "replicated_bytes": sum(sum(r["bytes"].values()) for r in ranks),
        }

    def checkpoint_written(self, state: dict[str, Any], run_dir: RunDir) -> None:
        if self.ctx.is_main:
            table_files.prune_tables(run_dir.path, state["tables"])

    def load_tables(self, state: dict[str, Any], run_dir: RunDir) -> dict[str, Any]:
        assert self.model is not None, "place() first"
        live = {k: v for k, v in self.model.state_dict().items() if sharded.is_sharded(v)}
        has_best = state.get("best_state") is not None
        best = {k: v.detach().clone() for k, v in live.items()} if has_best else {}
        template = {"model": live, "best": best, "optim": self.dmp.fused_optimizer.state_dict()}
        loaded = table_files.load_tables(run_dir.path, str(state.get("tables")), template)
        self.dmp.fused_optimizer.load_state_dict(loaded["optim"])
        model = {**state["model"], **loaded["model"]}
        best_state = {**state["best_state"], **loaded["best"]} if has_best else None
        return {**state, "model": model, "best_state": best_state}

    def model_state(self, model: nn.Module, run_dir: RunDir) -> tuple[dict[str, Any], str | None]:
        """Each process writes its tables beside model.pt (``model-tables/``); model.pt holds
        the rest. Nothing is gathered: ``load_run`` reads the tables whole where they are used
        (predict, export, serve)."""
        return table_files.save_model_tables(run_dir.path, model, self.ctx)


def make_sync(ctx: distributed.Context | None, cfg: RunConfig, device: torch.device) -> StepSync:
    """The synchronisation of a run of this process: ``ctx``'s (sharded tables: a process group
    of one where there is no other), or none (one process)."""
    if cfg.train.embeddings == "sharded":
        sharded.check_config(cfg, device)
        return ShardedSync(ctx or sharded.single_process_context(device))
    return StepSync() if ctx is None else DistributedSync(ctx)
