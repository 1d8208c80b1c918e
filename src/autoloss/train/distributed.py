"""One training run across processes (``torchrun``, ``autoloss train --nproc N``): the process
group and this process's place in it.

Every rank holds a full replica of the model, the loss policy and their optimisers, and trains on
its own contiguous part of each global batch; :mod:`autoloss.train.replicas` keeps the replicas
identical (row-weighted gradient averaging, no ``DistributedDataParallel``: its reducer cannot
hold sparse tables with NCCL, and the bi-level policies take ``autograd.grad`` and several backward
passes per step), :mod:`autoloss.train.failures` makes a rank's failure one line, and
:mod:`autoloss.train.launch` starts the ranks of one machine (docs/distributed.md).

The process group is the one ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): gloo on CPU, nccl on CUDA (``cuda:LOCAL_RANK``). A world of one
process takes none of these paths: single-process training is unchanged bit for bit.
"""

from __future__ import annotations

import faulthandler
import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import torch
import torch.distributed as dist

from autoloss.data.spec import Batch
from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig
from autoloss.train.failures import announce, launched, timeout_seconds


class Batches(Protocol):
    """What the trainer iterates: batches of one epoch from a position, and how many."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]: ...


# ---------------------------------------------------------------------------------------------
# The process group


@dataclass(frozen=True)
class Context:
    """This process's place in a distributed run; ``device``: where collectives run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> Context | None:
    """The distributed run this process belongs to, or None (one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    world = dist.get_world_size()
    return Context(
        rank=dist.get_rank(),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        device=device,
    )


def rank_device(name: str, local_rank: int) -> torch.device:
    """The training device of a rank: CPU, or ``cuda:LOCAL_RANK`` for ``cuda`` / ``auto``."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ConfigError(
            f"--device {name}: with several processes each uses cuda:LOCAL_RANK; "
            "give --device cuda (or auto, or cpu)"
        )
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
            "start at most one process per GPU"
        )
    return torch.device("cuda", local_rank)


def init_from_env(device_name: str) -> Context | None:
    """Join the process group torchrun describes; None when this is the only process."""
    if not launched():
        return None
    faulthandler.enable()  # a rank that aborts or crashes prints its Python stacks
    if not dist.is_initialized():
        device = rank_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        announce()
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return context()


@contextmanager
def process_group(device_name: str) -> Iterator[Context | None]:
    """:func:`init_from_env` for the duration of a command, then leave the group."""
    ctx = init_from_env(device_name)
    try:
        yield ctx
        if ctx is not None:  # every rank done before any tears its transport down
            dist.barrier()
    finally:
        if ctx is not None and dist.is_initialized():
            dist.destroy_process_group()
            gc.collect()  # free what held the group's buffers while the interpreter is whole


def check_config(cfg: RunConfig) -> None:
    """Refuse what a distributed run does not support (one line, exit 2)."""
    if cfg.loss.method == "search":
        raise ConfigError(
            "--loss search runs its trials in one process: train it without --nproc/torchrun, "
            "then train the weights it finds (weights:...) on several"
        )
    if cfg.loss.method == "reweight":
        raise ConfigError(
            "--loss reweight normalises its weights over each whole batch, which a distributed "
            "run splits between processes: train it in one process"
        )
    if "history" in cfg.loss.controller_inputs:
        raise ConfigError(
            "loss.controller_inputs 'history' keeps a per-example memory that a distributed "
            "run does not share between processes: train it in one process"
        )


def threads_per_rank(local_world_size: int) -> int:
    """CPU threads for each of ``local_world_size`` processes on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_world_size))


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if context() is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]
