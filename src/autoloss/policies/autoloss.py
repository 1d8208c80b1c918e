"""AutoLoss (Zhao et al., KDD 2021): an example-wise controller over the candidate losses.

The controller (:class:`~autoloss.policies.gumbel.LossController`) sees each training example's
label and the recommender's detached prediction and outputs α (B, K). ``autoloss`` weights the
candidates with Gumbel-softmax samples of α at the annealed temperature τ (soft, or hard
straight-through); ``autoloss-soft`` (ablation AL-2) uses α directly. The recommender trains on
``mean_b Σ_k p_k ℓ_k`` with p constant; the controller learns on validation batches every f steps
(:class:`~autoloss.policies.bilevel.BilevelPolicy`).

``controller=PATH`` loads a saved ``controller.pt`` frozen (transfer to another model or dataset of
the same task type, class count and candidate set): it never updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autoloss.errors import ConfigError
from autoloss.losses import DEFAULT_CANDIDATES, CandidateSet
from autoloss.policies.base import as_candidate_set, config_candidates
from autoloss.policies.bilevel import BilevelPolicy, BilevelSchedule
from autoloss.policies.config import LossConfig, controller_options
from autoloss.policies.gumbel import (
    DEFAULT_INPUTS,
    ControllerInputs,
    GumbelSelector,
    LossController,
    Temperature,
    load_controller,
)


def task_classes(task: str, num_classes: int | None) -> int:
    """The class count of a task: 2 for binary; multi-class needs ``num_classes`` >= 2."""
    if task == "binary":
        return 2
    if num_classes is None or num_classes < 2:
        raise ConfigError(f"a multiclass task needs num_classes >= 2, got {num_classes}")
    return int(num_classes)


def temperature_schedule(
    start: float, decay: float, minimum: float, anneal: float | None, total_steps: int | None
) -> Temperature:
    """τ per step: ``max(minimum, start - decay·t)``, or with ``anneal`` (a fraction of the
    planned ``total_steps``) the decay that reaches ``minimum`` at that point of the run."""
    if anneal is None:
        return Temperature(start, decay, minimum)
    if not (anneal > 0 and total_steps):
        raise ConfigError(
            f"loss.tau_anneal={anneal} needs a fraction > 0 and the run's planned steps"
        )
    Temperature(start, 0.0, minimum)  # checks start and minimum
    return Temperature.annealed_over(anneal * total_steps, start, minimum)


class AutoLoss(BilevelPolicy):
    """The AutoLoss criterion: per-example Gumbel-softmax weights from a learnt controller.

    Use it like a loss function and give it validation batches::

        crit = AutoLoss(task="binary")                 # or task="multiclass", num_classes=5
        loss = crit(logits, y)                          # mean_b Σ_k p_bk ℓ_bk
        loss.backward(); opt.step()
        if crit.should_update(step):
            crit.update(model, x_valid, y_valid, train_batch=(x, y))

    Options: ``candidates`` (names of registered candidate losses), ``mode`` ("first-order" or
    "unrolled"), ``update_every`` (f), ``controller_lr``, ``xi`` and ``unrolled_impl`` (unrolled
    mode), the temperature schedule ``tau_start``/``tau_decay``/``tau_min``, ``hard``
    (straight-through one-hot samples), ``gumbel=False`` (α directly: ``autoloss-soft``), the
    controller's ``hidden`` sizes and ``dropout``, and ``controller`` (a saved controller.pt, frozen).
    """

    def __init__(
        self,
        task: str = "binary",
        num_classes: int | None = None,
        *,
        candidates: Sequence[str] | str | CandidateSet = DEFAULT_CANDIDATES,
        focal_gamma: float = 2.0,
        kl_eps: float = 0.1,
        mode: str = "first-order",
        update_every: int = 7,
        controller_lr: float = 1e-3,
        xi: float = 1e-3,
        unrolled_impl: str = "finite-difference",
        tau_start: float = 1.0,
        tau_decay: float = 5e-5,
        tau_min: float = 0.01,
        hard: bool = False,
        gumbel: bool = True,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.2,
        controller: str | Path | None = None,
        inputs: Sequence[str] = DEFAULT_INPUTS,
        total_steps: int | None = None,
        tau_anneal: float | None = None,
        split_rows: tuple[int, int] | None = None,
    ) -> None:
        cs = as_candidate_set(candidates, task, focal_gamma=focal_gamma, kl_eps=kl_eps)
        super().__init__(cs, BilevelSchedule(mode, update_every, controller_lr, xi, unrolled_impl))
        self.name = "autoloss" if gumbel else "autoloss-soft"
        self.num_classes = task_classes(task, num_classes)
        tau = temperature_schedule(tau_start, tau_decay, tau_min, tau_anneal, total_steps)
        features = ControllerInputs(tuple(inputs), self.num_classes, cs, total_steps)
        self.frozen_from: str | None = None
        if controller is not None:
            loaded = load_controller(controller)
            loaded.check_compatible(
                task=task, candidates=cs.names, num_classes=self.num_classes, inputs=features.names
            )
            network = loaded.network
            self.frozen_from = str(controller)
            self.update_every = 0
        else:
            network = LossController(len(cs), features.width, hidden, dropout)
        self.selector = GumbelSelector(
            network, tau, hard=hard, gumbel=gumbel, inputs=features, history_rows=split_rows
        )
        self._alpha_sum: torch.Tensor | None = None
        self._alpha_n = 0

    @classmethod
    def from_config(
        cls,
        cfg: LossConfig,
        task: str,
        num_classes: int,
        *,
        total_steps: int | None = None,
        split_rows: tuple[int, int] | None = None,
        gumbel: bool = True,
    ) -> AutoLoss:
        return cls(
            task,
            num_classes,
            candidates=config_candidates(cfg, task),
            mode=cfg.mode,
            update_every=cfg.update_every,
            xi=cfg.xi,
            unrolled_impl=cfg.unrolled_impl,
            gumbel=gumbel,
            controller=cfg.controller,
            total_steps=total_steps,
            split_rows=split_rows,
            **controller_options(cfg),
        )

    @property
    def controller(self) -> LossController:
        """The controller network (x -> α)."""
        return self.selector.network

    @property
    def frozen(self) -> bool:
        return self.frozen_from is not None

    def train(self, mode: bool = True) -> AutoLoss:
        super().train(mode)
        if self.frozen:
            self.controller.eval()
        return self

    def policy_weights(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        step: int,
        *,
        own_step: bool = False,
        rows: torch.Tensor | None = None,
        split: str = "train",
    ) -> torch.Tensor:
        recommender_step = not own_step and self.training
        if recommender_step:
            self._commit_history()
        log_alpha = self.selector.log_alpha(logits, y, step, learn=own_step, rows=rows, split=split)
        if recommender_step:
            self.selector.remember("train", rows, logits, y)
            a = log_alpha.detach().exp().sum(0)
            self._alpha_sum = a if self._alpha_sum is None else self._alpha_sum + a
            self._alpha_n += logits.shape[0]
        return self.selector.sample(log_alpha, step).to(logits.dtype)

    def remember(
        self, split: str, rows: torch.Tensor | None, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        self.selector.remember(split, rows, logits, y)

    def _commit_history(self) -> None:
        if self.selector.history is not None:
            self.selector.history.commit()

    def update(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        out = super().update(*args, **kwargs)
        self._commit_history()  # this step's visits: read from the next step on
        return out

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """α (B, K): the controller's distribution over the candidates, before Gumbel noise."""
        return (
            self.selector.log_alpha(logits, y, self.num_steps, learn=False).exp().to(logits.dtype)
        )

    def stats(self) -> dict[str, float]:
        out = super().stats()
        if self.selector.gumbel:
            out["tau"] = self.selector.tau(max(self.num_steps - 1, 0))
        if self._alpha_sum is not None and self._alpha_n:
            mean = (self._alpha_sum / self._alpha_n).tolist()
            for n, v in zip(self.candidates, mean):
                out[f"alpha_{n}"] = float(v)  # mean α since the previous log line
            self._alpha_sum, self._alpha_n = None, 0
        return out

    def get_extra_state(self) -> dict[str, Any]:
        self._commit_history()  # a checkpoint holds every visit so far
        alpha = None if self._alpha_sum is None else self._alpha_sum.detach().cpu()
        return {**super().get_extra_state(), "alpha_sum": alpha, "alpha_n": self._alpha_n}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        if isinstance(state, dict):
            alpha = state.get("alpha_sum")
            device = self.controller.head.weight.device
            self._alpha_sum = None if alpha is None else alpha.to(device)
            self._alpha_n = int(state.get("alpha_n", 0))

    def controller_state(self) -> dict[str, Any] | None:
        return self.selector.saved_state(self.name, self.num_classes, self.candidate_set)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gumbel": self.selector.gumbel,
            "hard": self.selector.hard,
            "controller_updates": self.updates,
        }
        if self.frozen:
            out["controller"] = self.frozen_from
            out["frozen"] = True
        else:
            out.update(super().describe())
        if self.selector.gumbel:
            out["tau_final"] = self.selector.tau(max(self.num_steps - 1, 0))
        if self.selector.inputs.names != DEFAULT_INPUTS:
            out["controller_inputs"] = list(self.selector.inputs.names)
        return out
