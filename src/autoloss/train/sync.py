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
from torch import nn

from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedDataset
from autoloss.train import distributed, replicas
from autoloss.train.distributed import Batches
from autoloss.train.evaluation import predict_logits


class StepSync:
    """One process: nothing to synchronise."""

    world_size = 1
    is_main = True

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


def make_sync(ctx: distributed.Context | None) -> StepSync:
    """The synchronisation of a run of this process: ``ctx``'s, or none (one process)."""
    return StepSync() if ctx is None else DistributedSync(ctx)
