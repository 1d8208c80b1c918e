"""autoloss: deep recommender training with automated loss-function search (AutoLoss, KDD 2021).

The public Python API (see docs/api.md). Any model that returns logits can train with a
searched loss in a hand-written loop::

    import autoloss
    crit = autoloss.AutoLoss(task="binary")     # or task="multiclass", num_classes=5
    loss = crit(model(x), y)                     # mean_b Σ_k p_bk ℓ_bk
    loss.backward(); opt.step(); opt.zero_grad()
    if crit.should_update(step):
        crit.update(model, x_valid, y_valid, train_batch=(x, y))

Criteria (``nn.Module``\\s, :mod:`autoloss.policies`): :class:`AutoLoss`, :class:`DARTSLoss`,
:class:`SLFLoss`, :class:`Reweight` (per-example weights), :func:`candidate_loss` (one fixed candidate), :class:`LossPolicy` (their base).
Candidate losses (:mod:`autoloss.losses`): :func:`candidate_losses`, :func:`register_candidate`.
Models (:mod:`autoloss.models`): :func:`build_model`, :func:`model_names`.
Data (:mod:`autoloss.data`): :func:`open_dataset`, :class:`EncodedDataset`, :class:`BatchIterator`,
:class:`Batch`, :class:`FeatureSpec`.
Names load on first use: ``import autoloss`` itself does not import torch.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library logs, the program shows: nothing reaches a program that configures no logging
# (autoloss.logs; the command line configures it).
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from autoloss.data.batches import BatchIterator
    from autoloss.data.spec import Batch, FeatureSpec
    from autoloss.data.store import EncodedDataset, open_dataset
    from autoloss.losses import candidate_losses, register_candidate
    from autoloss.models import build_model, model_names
    from autoloss.policies.autoloss import AutoLoss
    from autoloss.policies.base import LossPolicy
    from autoloss.policies.darts import DARTSLoss
    from autoloss.policies.fixed import candidate_loss
    from autoloss.policies.reweight import Reweight
    from autoloss.policies.slf import SLFLoss

_WHERE = {
    "AutoLoss": "autoloss.policies.autoloss",
    "DARTSLoss": "autoloss.policies.darts",
    "SLFLoss": "autoloss.policies.slf",
    "Reweight": "autoloss.policies.reweight",
    "LossPolicy": "autoloss.policies.base",
    "candidate_loss": "autoloss.policies.fixed",
    "candidate_losses": "autoloss.losses",
    "register_candidate": "autoloss.losses",
    "build_model": "autoloss.models",
    "model_names": "autoloss.models",
    "open_dataset": "autoloss.data.store",
    "EncodedDataset": "autoloss.data.store",
    "BatchIterator": "autoloss.data.batches",
    "Batch": "autoloss.data.spec",
    "FeatureSpec": "autoloss.data.spec",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'autoloss' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "AutoLoss",
    "Batch",
    "BatchIterator",
    "DARTSLoss",
    "EncodedDataset",
    "FeatureSpec",
    "LossPolicy",
    "Reweight",
    "SLFLoss",
    "__version__",
    "build_model",
    "candidate_loss",
    "candidate_losses",
    "model_names",
    "open_dataset",
    "register_candidate",
]
