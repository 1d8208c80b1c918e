"""Embedding tables sharded across the processes of a run by TorchRec (``train.embeddings=sharded``).

The model is built with its field embeddings in TorchRec tables
(:func:`autoloss.models.base.torchrec_tables`), then ``DistributedModelParallel`` places each
table on one process: table-wise on the CPU (gloo has no reduce-scatter for row-wise sharding),
the planner's choice on CUDA. The tables' optimiser runs inside the backward pass (FBGEMM's fused
kernels); the dense layers, the first-order term's table and the policy stay replicated and are
averaged by :class:`~autoloss.train.replicas.Replicas` as in every distributed run. This module:
the checks, the sharding, a process group for a run of one process, and the tables written by
every process for itself (``torch.distributed.checkpoint``): for checkpoints, and beside
``model.pt``, where ``load_run`` reads them whole.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from autoloss.errors import ConfigError
from autoloss.models.torchrec_tables import TORCHREC_HINT, TorchRecFieldEmbedding
from autoloss.train.config import RunConfig
from autoloss.train.distributed import Context

#: ``optim.table_optimizer`` -> FBGEMM's fused optimiser
_FUSED = {"adam": "ADAM", "rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD"}


def require_torchrec() -> None:
    """ConfigError (one line) when TorchRec or FBGEMM is missing or does not load. TorchRec
    configures the root logger when imported and warns of its own internals: a library's
    business, not the user's (:func:`_quiet`)."""
    try:
        with _root_logging_kept():
            import fbgemm_gpu  # noqa: F401
            import torchrec  # noqa: F401
    except (ImportError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"train.embeddings=sharded needs TorchRec, which does not load here ({first}): "
            f"{TORCHREC_HINT}"
        ) from None
    _quiet()


@contextmanager
def _root_logging_kept() -> Iterator[None]:
    """The root logger as it was (FBGEMM's modules call ``logging.basicConfig`` when imported)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(level)


def _quiet() -> None:
    """TorchRec's planner notes and deprecation warnings (ShardedTensor, which its sharded
    tables still use) out of a run's output."""
    for name in ("torchrec", "torch.fx._symbolic_trace", "fbgemm_gpu"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*DTensor instead.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*HeuristicalStorage.*", category=FutureWarning)


def check_config(cfg: RunConfig, device: torch.device) -> None:
    """Refuse, in one line, what sharded tables cannot do."""
    refusals = {
        cfg.loss.mode == "unrolled" and cfg.loss.method in ("autoloss", "darts"): "loss.mode="
        "unrolled takes a virtual step over every embedding table, which a sharded table does "
        "not allow (its optimiser runs inside the backward pass): use loss.mode=first-order",
        cfg.loss.method == "reweight" and cfg.loss.reweight_mode == "unrolled": "loss."
        "reweight_mode=unrolled takes a virtual step over every embedding table, which a sharded "
        "table does not allow: use loss.reweight_mode=first-order",
        cfg.model.name == "lr": "model lr has no embedding tables to shard: train it replicated",
        not cfg.optim.lazy_embeddings: "optim.lazy_embeddings=false (a dense Adam step on every "
        "row) is not what FBGEMM's sharded tables do: keep it true",
        cfg.optim.lr_decay_on_plateau < 1: "optim.lr_decay_on_plateau changes the learning "
        "rate of the sharded tables' fused optimiser, which is fixed when they are built: keep 1",
        cfg.optim.table_optimizer == "adam" and device.type == "cpu": "optim.table_optimizer="
        "adam: FBGEMM has no CPU kernel for Adam on sharded tables: set "
        "optim.table_optimizer=rowwise_adagrad (and optim.embedding_lr, e.g. 0.01)",
    }
    for refused, why in refusals.items():
        if refused:
            raise ConfigError(f"train.embeddings=sharded: {why}")
    require_torchrec()


def single_process_context(device: torch.device) -> Context:
    """A process group of this one process (gloo), for sharded tables without torchrun."""
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    return Context(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device)


def shard(model: nn.Module, cfg: RunConfig, ctx: Context, device: torch.device) -> Any:
    """Place ``model``'s TorchRec tables on the processes of ``ctx`` (in place); returns the
    ``DistributedModelParallel`` that holds them (its ``fused_optimizer``: the tables')."""
    with _root_logging_kept():
        return _shard(model, cfg, ctx, device)


def _shard(model: nn.Module, cfg: RunConfig, ctx: Context, device: torch.device) -> Any:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import (
        EmbeddingShardingPlanner,
        ParameterConstraints,
        Topology,
    )
    from torchrec.distributed.types import ShardingEnv

    lr = cfg.optim.embedding_lr or cfg.optim.lr
    fused = {"optimizer": getattr(EmbOptimType, _FUSED[cfg.optim.table_optimizer])}
    fused.update(learning_rate=lr, eps=1e-8)
    sharder = EmbeddingBagCollectionSharder(fused_params=fused)
    names = [c.name for m in _field_tables(model) for c in m.tables.embedding_bag_configs()]
    constraints = None
    if device.type == "cpu":  # gloo: table-wise only
        constraints = {n: ParameterConstraints(sharding_types=["table_wise"]) for n in names}
    topology = Topology(
        world_size=ctx.world_size,
        compute_device=device.type,
        local_world_size=ctx.local_world_size,
    )
    group = dist.GroupMember.WORLD
    plan = EmbeddingShardingPlanner(topology=topology, constraints=constraints).collective_plan(
        model, [sharder], group
    )
    return DistributedModelParallel(
        model,
        env=ShardingEnv.from_process_group(group),
        device=device,
        plan=plan,
        sharders=[sharder],
        data_parallel_wrapper=_no_data_parallel(),
    )


def _field_tables(model: nn.Module) -> list[TorchRecFieldEmbedding]:
    return [m for m in model.modules() if isinstance(m, TorchRecFieldEmbedding)]


def _no_data_parallel() -> Any:
    """DistributedModelParallel's wrapper of the dense part: none (no DistributedDataParallel;
    ``Replicas`` keeps the replicas identical, as in every distributed run)."""
    from torchrec.distributed.model_parallel import DataParallelWrapper

    class Replicated(DataParallelWrapper):  # type: ignore[misc]
        def wrap(self, dmp: Any, env: Any, device: Any) -> None:
            return None

    return Replicated()


def move_dense(model: nn.Module, device: torch.device) -> None:
    """Everything of ``model`` but its TorchRec tables (still on the meta device) to ``device``."""
    owners = _field_tables(model)
    tables = [m._modules.pop("tables") for m in owners]
    try:
        model.to(device)
    finally:
        for m, t in zip(owners, tables):
            m._modules["tables"] = t


def set_grad_scale(model: nn.Module, share: float) -> None:
    """This process's share of the global batch (its rows / all rows), for the tables' backward."""
    for m in _field_tables(model):
        m.grad_scale = share


def is_sharded(value: Any) -> bool:
    """Whether a state-dict entry is a sharded table (a ``ShardedTensor``)."""
    return hasattr(value, "local_shards")


def split_state(state: dict[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the replicated entries of a model state, its sharded tables)."""
    if state is None:
        return None, {}
    tables = {k: v for k, v in state.items() if is_sharded(v)}
    return {k: v for k, v in state.items() if k not in tables}, tables


def local_tables(model: nn.Module) -> dict[str, Any]:
    """The tables (or parts of tables) this process holds and the bytes of their rows."""
    out: dict[str, int] = {}
    for key, value in model.state_dict().items():
        if is_sharded(value):
            n = sum(s.tensor.numel() * s.tensor.element_size() for s in value.local_shards())
            if n:
                out[key.removesuffix(".weight").rsplit(".", 1)[-1]] = n
    return {"tables": sorted(out), "bytes": out}
