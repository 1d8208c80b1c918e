"""Loss policies: the criteria of the recommender's training, and their registry.

Every loss method is a :class:`LossPolicy` (an ``nn.Module``): ``policy(logits, y)`` is the
training objective ``mean_b Σ_k w_bk ℓ_bk``. :func:`build_policy` builds the one ``--loss`` names.
Names are loaded on first use, so that importing the configuration (``LossConfig``) does not
import torch (the command line starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autoloss.policies.autoloss import AutoLoss
    from autoloss.policies.base import LossPolicy
    from autoloss.policies.config import LossConfig
    from autoloss.policies.darts import DARTSLoss
    from autoloss.policies.fixed import FixedWeights, SingleLoss, UniformWeights, candidate_loss
    from autoloss.policies.registry import (
        TRANSFERABLE,
        build_policy,
        method_names,
        parse_method,
        register_policy,
    )
    from autoloss.policies.reweight import Reweight
    from autoloss.policies.slf import SLFLoss

_WHERE = {
    "AutoLoss": "autoloss",
    "LossPolicy": "base",
    "LossConfig": "config",
    "DARTSLoss": "darts",
    "FixedWeights": "fixed",
    "SingleLoss": "fixed",
    "UniformWeights": "fixed",
    "candidate_loss": "fixed",
    "TRANSFERABLE": "registry",
    "build_policy": "registry",
    "method_names": "registry",
    "parse_method": "registry",
    "register_policy": "registry",
    "Reweight": "reweight",
    "SLFLoss": "slf",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'autoloss.policies' has no attribute {name!r}")
    return getattr(importlib.import_module(f"autoloss.policies.{_WHERE[name]}"), name)


__all__ = [
    "TRANSFERABLE",
    "AutoLoss",
    "DARTSLoss",
    "FixedWeights",
    "LossConfig",
    "LossPolicy",
    "Reweight",
    "SLFLoss",
    "SingleLoss",
    "UniformWeights",
    "build_policy",
    "candidate_loss",
    "method_names",
    "parse_method",
    "register_policy",
]
