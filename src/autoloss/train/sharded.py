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
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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
#: The tables' checkpoints, beside checkpoint.pt: one directory per checkpoint, ``step-N``.
TABLES_DIR = "checkpoint-tables"  # RunDir.CHECKPOINT_TABLES


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


class _NotFrom(logging.Filter):
    """Drops the records logged from files under ``part``."""

    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    def filter(self, record: logging.LogRecord) -> bool:
        return self.part not in record.pathname


@contextmanager
def _dcp_logs_kept_out() -> Iterator[None]:
    """``torch.distributed.checkpoint`` logs on the *root* logger, with tracebacks, what it
    tries before it fails (a missing metadata file, then the rank's): the one-line error that
    follows says it all, so these stay out of the run's output while it reads or writes."""
    root = logging.getLogger()
    kept_out = _NotFrom(os.path.join("torch", "distributed", "checkpoint", ""))
    root.addFilter(kept_out)
    try:
        yield
    finally:
        root.removeFilter(kept_out)


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


# ---------------------------------------------------------------------------- checkpoints
def save_tables(root: Path, step: int, state: dict[str, Any], ctx: Context) -> str:
    """Write the tables' ``state`` for the checkpoint of ``step`` (:func:`write_shards` into
    ``root/checkpoint-tables/step-STEP``); returns the directory's name (checkpoint.pt records
    it)."""
    name = f"step-{step}"
    write_shards(root / TABLES_DIR / name, state, ctx)
    return name


def write_shards(final: Path, state: dict[str, Any], ctx: Context) -> None:
    """``state`` (sharded tensors: each process writes its own shards) to the directory
    ``final`` through a temporary directory that rank 0 renames once every process has written."""
    import torch.distributed.checkpoint as dcp

    tmp = final.with_name(f".{final.name}.tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    with _dcp_logs_kept_out():
        dcp.save(state, checkpoint_id=str(tmp))
    dist.barrier()
    if ctx.is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    dist.barrier()


def prune_tables(root: Path, keep: str) -> None:
    """Remove the tables' checkpoints other than ``keep`` (after checkpoint.pt names it)."""
    for d in (root / TABLES_DIR).glob("*"):
        if d.name != keep:
            shutil.rmtree(d, ignore_errors=True)


def load_tables(root: Path, name: str, template: dict[str, Any]) -> dict[str, Any]:
    """``template`` (sharded tensors of this run's placement) filled from the checkpoint
    ``name``; a missing or damaged one is one line."""
    import torch.distributed.checkpoint as dcp

    from autoloss.errors import CheckpointError

    where = root / TABLES_DIR / name
    wanted = _without_empty(template)
    try:
        with _dcp_logs_kept_out():
            dcp.load(wanted, checkpoint_id=str(where))
    except _unreadable() as exc:  # DCP wraps every reader's failure in its CheckpointException
        raise CheckpointError(
            f"the sharded tables of the checkpoint cannot be read ({_reason(exc)}): "
            f"start the run again (autoloss train --out {root} --overwrite)",
            path=where,
        ) from None
    _fill(template, wanted)
    return template


def _without_empty(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without its empty dicts and lists, at any depth (the same tensors). They hold
    nothing, and a process that lacks some of the tables (every process of a run of several)
    makes DCP read an empty container as a value the checkpoint must have: no best weights
    before the first evaluation, no optimiser state on a process without a table."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            value = _without_empty(value)
        if not (isinstance(value, dict | list) and not value):
            out[key] = value
    return out


def _fill(state: dict[str, Any], loaded: dict[str, Any]) -> None:
    """Put what DCP loaded into ``loaded`` (:func:`_without_empty` of ``state``) back into
    ``state``: tensors were filled in place, other values replaced."""
    for key, value in loaded.items():
        if isinstance(value, dict) and isinstance(state.get(key), dict):
            _fill(state[key], value)
        else:
            state[key] = value


# ---------------------------------------------------------------------------- model.pt
#: Beside model.pt: the trained tables, each process's shards (``torch.distributed.checkpoint``).
MODEL_TABLES = "model-tables"
_TABLE_KEY = re.compile(
    r"^(?:(?P<path>.+)\.)?tables\.embedding_bags\.(?P<kind>[cb])(?P<i>\d+)\.weight$"
)


def save_model_tables(root: Path, model: nn.Module, ctx: Context) -> tuple[dict[str, Any], str]:
    """(model.pt's state: the replicated entries, the name of the directory beside it that holds
    the tables): every process writes its own tables; nothing is gathered."""
    state, tables = split_state(model.state_dict())
    write_shards(root / MODEL_TABLES, tables, ctx)
    assert state is not None
    return state, MODEL_TABLES


def load_model_tables(root: Path, name: str) -> dict[str, torch.Tensor]:
    """The tables a sharded run wrote (:func:`save_model_tables`), read whole in this process
    (no process group) and laid out as :class:`~autoloss.models.layers.FieldEmbedding` keeps
    them: each field's table in field order in one ``embedding.weight``, then a zero padding
    row."""
    from autoloss.errors import CheckpointError

    where = root / name
    try:
        full = _read_whole(where)
    except _unreadable() as exc:  # a missing or damaged file
        raise CheckpointError(
            f"the sharded tables beside model.pt cannot be read ({_reason(exc)}): "
            f"train the run again (autoloss train --out {root} --overwrite)",
            path=where,
        ) from None
    grouped: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
    for key, value in full.items():
        m = _TABLE_KEY.match(key)
        if m:
            order = (0 if m["kind"] == "c" else 1, int(m["i"]))
            grouped.setdefault(m["path"] or "", []).append((*order, value))
    out = {}
    for path, parts in grouped.items():
        rows = [t for _, _, t in sorted(parts, key=lambda p: p[:2])]
        pad = torch.zeros(1, rows[0].shape[1], dtype=rows[0].dtype)
        out[f"{path}.embedding.weight" if path else "embedding.weight"] = torch.cat([*rows, pad])
    return out


def _read_whole(where: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``torch.distributed.checkpoint`` directory, whole, in this process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(where)).read_metadata().state_dict_metadata
    warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single")
    full = {
        k: torch.empty(m.size, dtype=m.properties.dtype)
        for k, m in meta.items()
        if isinstance(m, TensorStorageMetadata)
    }
    with _dcp_logs_kept_out():
        dcp.load(full, checkpoint_id=str(where), no_dist=True)
    return full


def _reason(exc: BaseException) -> str:
    """The first line of why a ``torch.distributed.checkpoint`` read failed: the lowest rank's
    own error where DCP gathered them (its ``CheckpointException`` says only which ranks)."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        first = failures[min(failures)]
        exc = first[0] if isinstance(first, tuple) and first else first
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unreadable() -> tuple[type[BaseException], ...]:
    """What reading a ``torch.distributed.checkpoint`` directory raises when it is missing or
    damaged (DCP's ``CheckpointException`` is a ``BaseException``)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)
