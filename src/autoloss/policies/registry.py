"""The registry of ``--loss`` methods: :func:`build_policy` from a :class:`LossConfig`.

The fixed candidates (``ce``, ``focal``, ...), ``uniform`` and ``weights:a,b,...`` are fixed
policies; ``darts``, ``slf``, ``autoloss``, ``autoloss-soft`` and ``reweight`` learn. (``search``, fixed weights
found by an outer loop of trainings, lives in :mod:`autoloss.train.search`.) Adding a method
is adding one module and one :func:`register_policy` line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from autoloss.errors import ConfigError, RegistryError
from autoloss.losses import CandidateSet, candidate_names
from autoloss.policies.autoloss import AutoLoss
from autoloss.policies.base import LossPolicy, config_candidates
from autoloss.policies.config import LossConfig
from autoloss.policies.darts import DARTSLoss
from autoloss.policies.fixed import FixedWeights, SingleLoss, UniformWeights
from autoloss.policies.reweight import Reweight
from autoloss.policies.slf import SLFLoss

#: ``factory(cfg, task, num_classes, total_steps=N, split_rows=(n_train, n_valid))`` (the run's
#: planned recommender steps and split sizes, for schedules and per-example memories; may be None)
PolicyFactory = Callable[..., LossPolicy]

#: Methods that can start from a saved controller (``loss.controller``).
TRANSFERABLE = ("autoloss", "autoloss-soft", "reweight")


def _candidates(cfg: LossConfig, task: str, names: list[str] | None = None) -> CandidateSet:
    return config_candidates(cfg, task, names)


_FACTORIES: dict[str, PolicyFactory] = {
    "uniform": lambda cfg, task, n, **_: UniformWeights(_candidates(cfg, task)),
    "darts": DARTSLoss.from_config,
    "slf": SLFLoss.from_config,
    "autoloss": partial(AutoLoss.from_config, gumbel=True),
    "autoloss-soft": partial(AutoLoss.from_config, gumbel=False),
    "reweight": Reweight.from_config,
}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make ``--loss NAME`` build ``factory(cfg, task, num_classes, total_steps=N)``."""
    _FACTORIES[name] = factory


#: ``--loss search``: fixed weights chosen by an outer loop of trainings
#: (:mod:`autoloss.train.search`), not a criterion this registry builds.
SEARCH_METHOD = "search"


def method_names() -> list[str]:
    """Every ``--loss`` method: those this registry builds, and ``search``."""
    return sorted({*candidate_names(), "weights:a,b,...", SEARCH_METHOD, *_FACTORIES})


def parse_method(method: str, cfg: LossConfig) -> tuple[str, LossConfig]:
    """Split ``weights:a,b,c`` into the method name and a config carrying the weights."""
    if not method.startswith("weights:"):
        return method, cfg
    raw = method.split(":", 1)[1]
    try:
        w = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise RegistryError(
            f"--loss {method}: weights must be numbers, e.g. weights:1,1,0,2"
        ) from None
    return "weights", replace(cfg, weights=w)


def check_controller_option(method: str, cfg: LossConfig) -> None:
    """``loss.controller`` (a saved controller to transfer) only for the methods that use one."""
    if cfg.controller and method not in TRANSFERABLE:
        raise ConfigError(
            f"--controller applies to --loss {' / '.join(TRANSFERABLE)}, not {method}"
        )


def build_policy(
    cfg: LossConfig,
    task: str,
    num_classes: int = 2,
    *,
    total_steps: int | None = None,
    split_rows: tuple[int, int] | None = None,
) -> LossPolicy:
    """The policy for ``cfg.method`` on a ``task`` ("binary" or "multiclass") of ``num_classes``
    (``total_steps``: the run's planned recommender steps, for ``loss.tau_anneal`` and the
    ``progress`` controller input; ``split_rows``: the train and valid sizes, for ``history``)."""
    method, cfg = parse_method(cfg.method, cfg)
    check_controller_option(method, cfg)
    if method in candidate_names():
        # A single fixed loss computes only that candidate.
        return SingleLoss(_candidates(cfg, task, [method]), method)
    if method == "weights":
        if cfg.weights is None:
            raise RegistryError("--loss weights needs values: weights:a,b,... (one per candidate)")
        return FixedWeights(_candidates(cfg, task), cfg.weights)
    if method in _FACTORIES:
        return _FACTORIES[method](
            cfg, task, num_classes, total_steps=total_steps, split_rows=split_rows
        )
    if method == SEARCH_METHOD:
        raise RegistryError(
            "--loss search chooses fixed weights by training several runs: it is a method of "
            "autoloss train and compare, not a criterion (use weights:a,b,... with the weights)"
        )
    raise RegistryError(f"unknown loss method '{cfg.method}'; known: {', '.join(method_names())}")
