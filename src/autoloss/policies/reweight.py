"""``reweight``: learnt per-example weights over the candidate losses, each free to reach zero.

A controller (:class:`~autoloss.policies.gumbel.LossController` with ``output="magnitude"``, no
BatchNorm) maps what it sees of a training example (label, detached prediction, and the
example's candidate loss values) to K magnitudes ``m_bk = 2·sigmoid(z_bk)`` in (0, 2). The
weights are the magnitudes normalised per batch so that the mean total weight is 1::

    w_bk = m_bk / mean_b Σ_k m_bk

so any example's (or candidate's) weight may go to zero, relative to the others, and the scale of
the training loss stays that of CE. The head starts at zero, every magnitude at exactly 1: the
policy starts as the uniform mixture of the candidates, exactly CE with ``candidates=ce``
(Meta-Weight-Net, Shu et al. 2019); with the paper's candidates it is AutoLoss with magnitudes.

It learns on validation ("meta") batches with the meta-gradient of Learning to Reweight (Ren et
al. 2018): ``mode="unrolled"`` (the default) takes one Adam step on ∇_V CE_meta(W - ξ ∇_W
L_train(W, V)), i.e. how one training step with these weights would change the clean loss;
``mode="first-order"`` (the weighted validation loss at fixed W) is available for comparison.
Choices and their measurements: docs/method.md, "Per-example weights (reweight)".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from autoloss.errors import CheckpointError, ConfigError
from autoloss.losses import DEFAULT_CANDIDATES, CandidateSet
from autoloss.policies.autoloss import task_classes
from autoloss.policies.base import as_candidate_set, config_candidates
from autoloss.policies.bilevel import BilevelPolicy, BilevelSchedule
from autoloss.policies.config import LossConfig
from autoloss.policies.gumbel import (
    ControllerInputs,
    LossController,
    controller_state,
    load_controller,
)

#: What the controller sees by default: the paper's [y, ŷ] and the candidate losses.
REWEIGHT_INPUTS = ("label", "prediction", "losses")
#: A total weight below this (the batch's mean is 1) counts as switched off in the logged stats.
OFF = 0.1


def normalise(magnitudes: torch.Tensor) -> torch.Tensor:
    """(B, K) magnitudes -> weights whose per-example totals have mean 1 over the batch."""
    total = magnitudes.sum(1).mean()
    return magnitudes / total.clamp_min(torch.finfo(magnitudes.dtype).tiny)


class Reweight(BilevelPolicy):
    """Per-example, per-candidate weights with a zero option, learnt by a meta-gradient.

    Use it like :class:`~autoloss.policies.autoloss.AutoLoss`::

        crit = Reweight(task="binary")   # candidates="ce": Meta-Weight-Net
        loss = crit(logits, y); loss.backward(); opt.step()
        if crit.should_update(step):
            crit.update(model, x_meta, y_meta, train_batch=(x, y))

    Options: ``candidates``, ``mode`` (``unrolled`` or ``first-order``), ``update_every``,
    ``controller_lr``, ``xi`` and ``unrolled_impl``, the controller's ``hidden`` sizes, its
    ``inputs`` (``losses`` is always added), and ``controller`` (a saved reweight controller.pt,
    frozen: transfer).
    """

    name = "reweight"
    weights_sample = True

    def __init__(
        self,
        task: str = "binary",
        num_classes: int | None = None,
        *,
        candidates: Sequence[str] | str | CandidateSet = ("ce",),
        focal_gamma: float = 2.0,
        kl_eps: float = 0.1,
        mode: str = "unrolled",
        update_every: int = 7,
        controller_lr: float = 1e-3,
        xi: float = 1e-3,
        unrolled_impl: str = "finite-difference",
        hidden: Sequence[int] = (100,),
        inputs: Sequence[str] = REWEIGHT_INPUTS,
        controller: str | Path | None = None,
        total_steps: int | None = None,
    ) -> None:
        cs = as_candidate_set(candidates, task, focal_gamma=focal_gamma, kl_eps=kl_eps)
        super().__init__(cs, BilevelSchedule(mode, update_every, controller_lr, xi, unrolled_impl))
        self.num_classes = task_classes(task, num_classes)
        names = tuple(inputs) + (() if "losses" in inputs else ("losses",))
        if "history" in names:
            raise ConfigError("--loss reweight: the 'history' controller input is not supported")
        self.inputs = ControllerInputs(names, self.num_classes, cs, total_steps)
        self.frozen_from: str | None = None
        if controller is not None:
            self.network = self._load(controller, task)
            self.frozen_from = str(controller)
            self.update_every = 0
        else:
            self.network = LossController(
                len(cs), self.inputs.width, hidden, 0.0, batch_norm=False, output="magnitude"
            )
        self._off_sum: torch.Tensor | float = 0.0  # rows switched off since the last log line
        self._off_n = 0

    @classmethod
    def from_config(
        cls,
        cfg: LossConfig,
        task: str,
        num_classes: int,
        *,
        total_steps: int | None = None,
        **_: Any,
    ) -> Reweight:
        if cfg.reweight_candidates is not None and list(cfg.candidates) != list(DEFAULT_CANDIDATES):
            raise ConfigError(
                "--loss reweight takes its candidates from loss.reweight_candidates (default ce), "
                f"not --candidates: use --set loss.reweight_candidates={','.join(cfg.candidates)}"
            )
        return cls(
            task,
            num_classes,
            candidates=config_candidates(cfg, task, cfg.reweight_candidates),
            mode=cfg.reweight_mode,
            update_every=cfg.reweight_update_every,
            controller_lr=cfg.reweight_lr,
            xi=cfg.xi,
            unrolled_impl=cfg.unrolled_impl,
            hidden=cfg.reweight_hidden,
            inputs=cfg.controller_inputs,
            controller=cfg.controller,
            total_steps=total_steps,
        )

    def _load(self, path: str | Path, task: str) -> LossController:
        loaded = load_controller(path)
        if loaded.network.output != "magnitude":
            raise CheckpointError(
                f"a {loaded.method} controller gives probabilities, not per-example weights: "
                "transfer it with --loss autoloss",
                path=Path(path),
            )
        loaded.check_compatible(
            task=task,
            candidates=self.candidate_set.names,
            num_classes=self.num_classes,
            inputs=self.inputs.names,
        )
        return loaded.network

    @property
    def frozen(self) -> bool:
        return self.frozen_from is not None

    def train(self, mode: bool = True) -> Reweight:
        super().train(mode)
        if self.frozen:
            self.network.eval()
        return self

    def magnitudes(self, logits: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
        """(B, K) magnitudes in (0, 2) before the batch normalisation."""
        x = self.inputs(logits.detach(), y, step).to(self.network.head.weight.dtype)
        return self.network.magnitudes(x, learn=False)

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
        w = normalise(self.magnitudes(logits, y, step)).to(logits.dtype)
        if not own_step and self.training:
            self._off_sum = self._off_sum + (w.detach().sum(1) < OFF).sum()  # no host sync
            self._off_n += w.shape[0]
        return w

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The (B, K) weights of this batch (normalised over it), without changing anything."""
        return normalise(self.magnitudes(logits, y, self.num_steps)).to(logits.dtype)

    def stats(self) -> dict[str, float]:
        out = super().stats()
        if self._off_n:
            out["weight_off"] = float(self._off_sum) / self._off_n  # share of rows with total < OFF
            self._off_sum, self._off_n = 0.0, 0
        return out

    def controller_state(self) -> dict[str, Any] | None:
        return controller_state(
            self.network,
            method=self.name,
            num_classes=self.num_classes,
            candidate_set=self.candidate_set,
            inputs=self.inputs.names,
        )

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"controller_updates": self.updates}
        if self.frozen:
            out.update(controller=self.frozen_from, frozen=True)
        else:
            out.update(super().describe())
        out["controller_inputs"] = list(self.inputs.names)
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "off": [float(self._off_sum), self._off_n]}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        if isinstance(state, dict) and "off" in state:
            self._off_sum, self._off_n = float(state["off"][0]), int(state["off"][1])
