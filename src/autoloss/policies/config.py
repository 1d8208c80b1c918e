"""The loss section of a run's configuration (``loss.*`` keys, ``--loss`` and friends).

Owned by the policies: a policy is built from this and what it needs to know about the task
(``task``, ``num_classes``); :class:`autoloss.train.config.RunConfig` embeds it as ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LossConfig:
    method: str = "autoloss"
    candidates: list[str] = field(default_factory=lambda: ["focal", "kl", "hinge", "ce"])
    focal_gamma: float = 2.0
    kl_eps: float = 0.1
    gce_q: float = 0.7  # candidate gce: (1 - p_y^q) / q, q in (0, 1]
    tce_drop: float = 0.2  # candidate tce: final drop rate of the top-CE positives, in [0, 1)
    tce_ramp_steps: int = 10000  # tce: steps of the linear ramp of the drop rate from 0
    weights: list[float] | None = None  # for method "weights" (also "weights:a,b,c,d")
    # bi-level search (darts, autoloss, autoloss-soft)
    update_every: int = 7
    mode: str = "first-order"  # first-order | unrolled
    xi: float = 1e-3  # virtual step of the unrolled hypergradient
    unrolled_impl: str = "finite-difference"  # finite-difference | autograd
    tau_start: float = 1.0
    tau_decay: float = 5e-5
    tau_min: float = 0.01
    # anneal τ from tau_start to tau_min over this fraction of the run's planned steps
    # (replaces tau_decay; None: the fixed tau_decay per step, the paper's schedule)
    tau_anneal: float | None = None
    hard: bool = False  # straight-through hard Gumbel samples
    controller_hidden: list[int] = field(default_factory=lambda: [128, 128])
    controller_dropout: float = 0.2
    controller_lr: float = 1e-3
    # what the controller sees: label,prediction (the paper) [+ losses, margin, progress]
    controller_inputs: list[str] = field(default_factory=lambda: ["label", "prediction"])
    controller: str | None = None  # path of a saved controller.pt: transfer, frozen
    # per-example weights (method "reweight"; its own defaults, chosen on the development condition:
    # docs/method.md): its candidates (ce: Meta-Weight-Net), the meta-gradient mode, how often it
    # learns, its learning rate and the controller's hidden sizes
    reweight_candidates: list[str] | None = field(
        default_factory=lambda: ["ce"]
    )  # None: loss.candidates
    reweight_mode: str = "unrolled"  # unrolled | first-order
    reweight_update_every: int = 7
    reweight_lr: float = 1e-3
    reweight_hidden: list[int] = field(default_factory=lambda: [100])
    # searched fixed weights (method "search", an outer loop in autoloss.train.search)
    search_trials: int = 20
    search_epochs: int = 1
    search_rows: int | None = None  # rows of train per trial (None = all)


def controller_options(cfg: LossConfig) -> dict[str, Any]:
    """The ``loss.*`` settings of a Gumbel-softmax controller (AutoLoss and SLF), as the keyword
    arguments of their constructors."""
    return {
        "controller_lr": cfg.controller_lr,
        "tau_start": cfg.tau_start,
        "tau_decay": cfg.tau_decay,
        "tau_min": cfg.tau_min,
        "tau_anneal": cfg.tau_anneal,
        "hard": cfg.hard,
        "hidden": cfg.controller_hidden,
        "dropout": cfg.controller_dropout,
        "inputs": cfg.controller_inputs,
    }
