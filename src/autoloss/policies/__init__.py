"""Loss policies and their registry.

``--loss`` names a method; each method is a factory ``(LossConfig, task) -> LossPolicy``
registered with :func:`register_policy`. Adding a method is adding one module that registers itself
and listing it in ``_METHOD_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from autoloss.errors import RegistryError
from autoloss.losses import candidate_losses, candidate_names
from autoloss.policies.base import LossPolicy, PolicyInput, UpdateContext
from autoloss.policies.fixed import FixedWeights, SingleLoss, UniformWeights
from autoloss.train.config import LossConfig

PolicyFactory = Callable[[LossConfig, str], LossPolicy]

_FACTORIES: dict[str, PolicyFactory] = {}
# Modules that register further methods (darts, slf, autoloss, search) when present.
_METHOD_MODULES = (
    "autoloss.policies.darts",
    "autoloss.policies.slf",
    "autoloss.policies.controller",
    "autoloss.policies.search",
)
_loaded = False


def register_policy(name: str, factory: PolicyFactory) -> None:
    _FACTORIES[name] = factory


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _METHOD_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def method_names() -> list[str]:
    _load()
    return sorted({*candidate_names(), "uniform", "weights:a,b,...", *_FACTORIES})


def parse_method(method: str, cfg: LossConfig) -> tuple[str, LossConfig]:
    """Split ``weights:a,b,c`` into the method name and a config carrying the weights."""
    if method.startswith("weights:"):
        from dataclasses import replace

        raw = method.split(":", 1)[1]
        try:
            w = [float(v) for v in raw.split(",") if v.strip()]
        except ValueError:
            raise RegistryError(
                f"--loss {method}: weights must be numbers, e.g. weights:1,1,0,2"
            ) from None
        return "weights", replace(cfg, weights=w)
    return method, cfg


def build_policy(cfg: LossConfig, task: str) -> LossPolicy:
    """The policy for ``cfg.method`` on a ``task`` ("binary" or "multiclass")."""
    _load()
    method, cfg = parse_method(cfg.method, cfg)
    kw = {"focal_gamma": cfg.focal_gamma, "kl_eps": cfg.kl_eps}
    if method in candidate_names():
        # A single fixed loss computes only that candidate.
        return SingleLoss(candidate_losses([method], task, **kw), method)
    if method == "uniform":
        return UniformWeights(candidate_losses(cfg.candidates, task, **kw))
    if method == "weights":
        if cfg.weights is None:
            raise RegistryError("--loss weights needs values: weights:a,b,... (one per candidate)")
        return FixedWeights(candidate_losses(cfg.candidates, task, **kw), cfg.weights)
    if method in _FACTORIES:
        return _FACTORIES[method](cfg, task)
    raise RegistryError(f"unknown loss method '{cfg.method}'; known: {', '.join(method_names())}")


__all__ = [
    "FixedWeights",
    "LossPolicy",
    "PolicyInput",
    "SingleLoss",
    "UniformWeights",
    "UpdateContext",
    "build_policy",
    "method_names",
    "register_policy",
]
