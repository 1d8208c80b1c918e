"""Tiny hand-made recommenders, batches and bi-level problems for the loss-policy tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoloss.data.spec import Batch
from autoloss.losses import CandidateSet, candidate_losses
from autoloss.policies.base import LossPolicy
from autoloss.policies.bilevel import BilevelProblem
from autoloss.policies.config import LossConfig
from autoloss.train.config import RunConfig

QUIET: Any = lambda s: None  # noqa: E731


class TinyRecommender(nn.Module):
    """Sparse embedding (with a padding row) -> Linear -> BatchNorm -> ReLU -> logits."""

    def __init__(
        self, vocab: int = 30, fields: int = 2, dim: int = 4, num_classes: int = 2
    ) -> None:
        super().__init__()
        self.pad = vocab
        self.embedding = nn.Embedding(vocab + 1, dim, sparse=True, padding_idx=vocab)
        self.fc = nn.Linear(fields * dim, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 1 if num_classes == 2 else num_classes)

    def forward(
        self, x: torch.Tensor, dense: torch.Tensor | None = None, bags: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = torch.relu(self.bn(self.fc(self.embedding(x).flatten(1))))
        o = self.out(h)
        return o.squeeze(-1) if o.shape[1] == 1 else o


def batch(n: int, *, seed: int, vocab: int = 30, num_classes: int = 2, pad_every: int = 7) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, 2), generator=g)
    x[::pad_every, 1] = vocab  # some padding ids
    y = torch.randint(0, num_classes, (n,), generator=g)
    return Batch(x=x, y=y)


def problem(model: nn.Module, cands: CandidateSet, tb: Batch, vb: Batch) -> BilevelProblem:
    """The validation update of one step: train batch ``tb``, validation batch ``vb``."""
    return BilevelProblem(model, cands, valid=(vb.inputs(), vb.y), train=(tb.inputs(), tb.y))


def fix_noise(policy: LossPolicy, noise: torch.Tensor) -> None:
    """Make every Gumbel sample of ``policy`` use ``noise``."""
    policy.selector.noise = lambda log_alpha: noise  # type: ignore[assignment, union-attr]


def gumbel_noise(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return -torch.log(-torch.log(torch.rand(*shape, dtype=dtype)))


def loss_cfg(**over: Any) -> LossConfig:
    cfg = LossConfig()
    cfg.controller_hidden = [16, 16]
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def candidates(task: str = "binary") -> CandidateSet:
    return candidate_losses(["focal", "kl", "hinge", "ce"], task)


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if torch.is_tensor(v)}


def assert_same_state(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = {k: v for k, v in module.state_dict().items() if torch.is_tensor(v)}
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


def run_cfg(data: Path, **over: Any) -> RunConfig:
    """A small, fast training configuration on a tiny encoded dataset."""
    cfg = RunConfig()
    cfg.data.path = str(data)
    cfg.model.name = "deepfm"
    cfg.model.embed_dim = 8
    cfg.model.mlp = [16, 16]
    cfg.loss.method = "autoloss"
    cfg.loss.controller_hidden = [16, 16]
    cfg.optim.batch_size = 128
    cfg.optim.lr = 3e-3
    cfg.train.epochs = 1
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    for k, v in over.items():
        cfg.set(k.replace("__", "."), v)
    return cfg
