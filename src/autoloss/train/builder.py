"""From a :class:`RunConfig` to what a run trains: the process's settings (threads, heap,
device, the synchronisation of a distributed run), the dataset with its conditions, the model, the
loss policy and the optimisers (:func:`build_run`). The trainer, the weight search's trials and
:func:`~autoloss.train.run.load_run` build through here."""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from autoloss.data.batches import BatchIterator
from autoloss.data.conditions import Conditions, apply_conditions
from autoloss.data.spec import FeatureSpec
from autoloss.data.store import EncodedDataset, check_trainable, open_dataset
from autoloss.errors import ConfigError
from autoloss.models import build_model
from autoloss.models.base import torchrec_tables
from autoloss.policies.base import LossPolicy
from autoloss.policies.registry import build_policy
from autoloss.train import capacity, distributed, heap
from autoloss.train.config import RunConfig
from autoloss.train.distributed import Batches
from autoloss.train.optim import RecommenderOptimizer
from autoloss.train.sync import StepSync, make_sync


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
    """The model of ``cfg`` (its field embeddings in TorchRec tables, to be sharded, with
    ``train.embeddings=sharded``)."""
    with torchrec_tables() if cfg.train.embeddings == "sharded" else nullcontext():
        return _build_model(cfg, spec)


def _build_model(cfg: RunConfig, spec: FeatureSpec) -> nn.Module:
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


def policy_split(dataset: EncodedDataset) -> str:
    """The split learnt policies update on: ``meta`` where ``data.meta_fraction`` made one,
    else ``valid`` (which then also selects)."""
    return "meta" if "meta" in dataset.split_names else "valid"


def batches(
    cfg: RunConfig, dataset: EncodedDataset, sync: StepSync, split: str, *, train: bool
) -> Batches:
    """The batches of ``split`` this process trains on (``train``: shuffled, of
    ``optim.batch_size``; else of ``data.eval_batch_size``), its shard in a distributed run."""
    bs = cfg.optim.batch_size if train else cfg.data.eval_batch_size
    it = BatchIterator(
        dataset.split(split),
        bs,
        shuffle=train,
        seed=cfg.train.seed + (0 if split == "train" else 7919),
        block_rows=cfg.data.block_rows,
    )
    return sync.shard(it)


def planned_steps(cfg: RunConfig, dataset: EncodedDataset, sync: StepSync) -> int:
    """The recommender steps the run is planned for (epochs, or ``max_steps`` when smaller)."""
    t = cfg.train
    total = len(batches(cfg, dataset, sync, "train", train=True)) * t.epochs
    return min(total, t.max_steps) if t.max_steps > 0 else total


@dataclass
class RunParts:
    """What :func:`build_run` builds."""

    sync: StepSync
    threads: int  #: CPU threads of this process (result.json's ``threads``)
    device: torch.device
    dataset: EncodedDataset
    model: nn.Module
    policy: LossPolicy
    optimizer: RecommenderOptimizer
    warnings: list[str]  #: what the dataset's check found (trainable, but worth saying)


def build_run(cfg: RunConfig, dataset: EncodedDataset | None = None) -> RunParts:
    """Set this process up for ``cfg`` and build its parts, in the order that fixes the random
    streams (the seed, then the model, then the policy; a distributed run aligns them last)."""
    cfg.validate()
    ctx = distributed.context()
    if ctx is not None:
        distributed.check_config(cfg)
    threads = run_threads(cfg.train.num_threads, ctx)
    torch.set_num_threads(threads)
    if cfg.train.heap == "keep":
        heap.keep_freed_memory()
    device = resolve_device(cfg.train.device)
    if ctx is not None:
        device = distributed.rank_device(cfg.train.device, ctx.local_rank)
    sync = make_sync(ctx, cfg, device)
    dataset = dataset or run_dataset(cfg)
    warnings = check_trainable(dataset, sync.world_size) + sync.warnings(cfg)
    seed_everything(cfg.train.seed)
    model, policy = _build_model_and_policy(cfg, dataset, sync, device)
    optimizer = build_optimizer(cfg, model)
    sync.attach(model, policy, cfg.train.seed)
    return RunParts(sync, threads, device, dataset, model, policy, optimizer, warnings)


def _build_model_and_policy(
    cfg: RunConfig, dataset: EncodedDataset, sync: StepSync, device: torch.device
) -> tuple[nn.Module, LossPolicy]:
    spec = dataset.spec
    capacity.check_fits(spec, cfg.model.embed_dim, device, shards=sync.table_shards)
    model = capacity.out_of_memory(
        lambda: sync.place(build_recommender(cfg, spec), cfg, device), f"the {cfg.model.name} model"
    )
    policy: LossPolicy = build_policy(
        cfg.loss,
        spec.task,
        spec.num_classes,
        total_steps=planned_steps(cfg, dataset, sync),
        split_rows=(len(dataset.split("train")), len(dataset.split(policy_split(dataset)))),
    ).to(device)
    return model, policy


def build_optimizer(cfg: RunConfig, model: nn.Module) -> RecommenderOptimizer:
    """Sparse row-wise Adam for the embedding tables, dense Adam for the rest."""
    o = cfg.optim
    return RecommenderOptimizer(
        model,
        o.lr,
        o.embedding_lr,
        o.weight_decay,
        lazy=o.lazy_embeddings,
        clip_norm=o.clip_norm,
        table_optimizer=o.table_optimizer,
    )
