"""The loss policy: the one abstraction every loss method implements, and the public criterion.

A policy is an ``nn.Module`` used like any PyTorch criterion: ``loss = policy(logits, y)`` computes
the (B, K) matrix of candidate losses, the policy's (B, K) weights, and returns the training
objective :func:`~autoloss.losses.weighted_loss` ``mean_b Σ_k w_bk ℓ_bk``. A policy that learns
says when (:meth:`LossPolicy.should_update`) and learns in :meth:`LossPolicy.update`: on a
validation batch (AutoLoss, DARTS; ``uses_validation``) or on the gradients its weights received
from the training loss's backward pass (SLF). The trainer never asks which policy it runs.

The model is only ever called as ``model(x)``: ``x`` is a tensor, a tuple of tensors (passed as
positional arguments, ``model(*x)``) or a dict (keyword arguments).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet, candidate_losses, weighted_loss
from autoloss.policies.config import LossConfig

#: ``regularization(model) -> scalar``: a penalty added to the training objective (e.g. the
#: embedding L2 of the model's last forward); the unrolled hypergradient needs the same objective.
Regularization = Callable[[nn.Module], torch.Tensor]

#: ``sync(params)``: replace the ``.grad`` of ``params`` in place by their mean over the processes
#: of a distributed run, before the policy's own optimiser steps (installed by the trainer).
GradSync = Callable[[Sequence[nn.Parameter]], None]


def as_candidate_set(
    candidates: Sequence[str] | str | CandidateSet,
    task: str,
    *,
    focal_gamma: float = 2.0,
    kl_eps: float = 0.1,
) -> CandidateSet:
    """``candidates`` as a :class:`CandidateSet` for ``task``: names (``"focal,kl,hinge,ce"``)
    are built with these options; a set built by :func:`~autoloss.losses.candidate_losses` (any
    option of any candidate, e.g. ``gce_q``) is used as it is."""
    if isinstance(candidates, CandidateSet):
        if candidates.task != task:
            raise ConfigError(f"the candidate set is for a {candidates.task} task, not {task}")
        return candidates
    return candidate_losses(candidates, task, focal_gamma=focal_gamma, kl_eps=kl_eps)


def config_candidates(
    cfg: LossConfig, task: str, names: Sequence[str] | None = None
) -> CandidateSet:
    """The candidate set a ``loss.*`` configuration describes (every candidate option)."""
    return candidate_losses(
        list(names) if names is not None else cfg.candidates,
        task,
        focal_gamma=cfg.focal_gamma,
        kl_eps=cfg.kl_eps,
        gce_q=cfg.gce_q,
        tce_drop=cfg.tce_drop,
        tce_ramp_steps=cfg.tce_ramp_steps,
    )


def model_args(x: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Positional and keyword arguments of ``model(x)`` (tuple: ``*x``, dict: ``**x``)."""
    if isinstance(x, tuple | list):
        return tuple(x), {}
    if isinstance(x, dict):
        return (), dict(x)
    return (x,), {}


def call_model(model: nn.Module, x: Any) -> torch.Tensor:
    """``model(x)`` with :func:`model_args`' convention."""
    args, kwargs = model_args(x)
    out: torch.Tensor = model(*args, **kwargs)
    return out


class LossPolicy(nn.Module):
    """Base class: per-example weights over K candidate losses; ``policy(logits, y)`` -> scalar.

    Subclasses implement :meth:`weights`; learnable ones set ``update_every`` and implement
    :meth:`update`. ``name`` is the ``--loss`` method. ``num_steps`` counts training-mode calls
    (recommender steps), like BatchNorm's ``num_batches_tracked``; it drives schedules (τ).

    Shapes: logits (B,) binary or (B, C) multi-class, y (B,) int64 -> loss ().
    """

    name: str = "policy"
    #: Learn every ``update_every`` recommender steps (0: never learns).
    update_every: int = 0
    #: :meth:`update` needs a validation batch (bi-level methods); False: it learns from the
    #: training loss's own gradients (call it right after ``loss.backward()``).
    uses_validation: bool = False
    #: A run ends by writing a sample of the training rows' weights (``example_weights.npz``):
    #: for policies whose per-example total weight varies (``reweight``).
    weights_sample: bool = False

    def __init__(self, candidate_set: CandidateSet) -> None:
        super().__init__()
        self.candidate_set = candidate_set
        self.num_steps = 0
        self._step_rows: torch.Tensor | None = None
        self._last: tuple[torch.Tensor, torch.Tensor, int, torch.Tensor] | None = None

    @property
    def candidates(self) -> tuple[str, ...]:
        """Names of the candidate losses, in column order."""
        return self.candidate_set.names

    @property
    def task(self) -> str:
        return self.candidate_set.task

    @property
    def last_weights(self) -> torch.Tensor | None:
        """The (B, K) weights of the last training call (detached), or None before the first."""
        return None if self._last is None else self._last[1]

    @property
    def last_losses(self) -> torch.Tensor | None:
        """The (B, K) candidate losses of the last training call (detached), or None."""
        return None if self._last is None else self._last[3]

    def forward(
        self, logits: torch.Tensor, y: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The training objective ``mean_b Σ_k w_bk ℓ_bk`` of a batch (a scalar).

        ``rows``: the batch's positions in the training split, for policies with a per-example
        memory (the ``history`` controller input); others ignore it.
        """
        self.candidate_set.step = self.num_steps  # step-dependent candidates (tce's ramp)
        self._step_rows = rows
        self._check_width(logits)
        losses = self.candidate_set(logits, y)  # checks logits and labels (one ValueError)
        w = self.weights(logits, y, losses, self.num_steps)
        if self.training:  # eval-mode calls (e.g. a validation loss) change no statistics
            classes = 2 if logits.dim() == 1 else int(logits.shape[1])
            self._last = (y.detach(), w.detach(), classes, losses.detach())
            self.num_steps += 1
        return weighted_loss(w, losses)

    def _check_width(self, logits: torch.Tensor) -> None:
        """Multi-class logits as wide as the class count the policy was built for, if it has one."""
        classes = getattr(self, "num_classes", None)
        if self.task != "multiclass" or not classes or not isinstance(logits, torch.Tensor):
            return
        if logits.dim() == 2 and logits.shape[1] != classes:
            raise ValueError(
                f"logits: shape {tuple(logits.shape)}; this criterion was built for {classes} "
                f"classes, (B, {classes})"
            )

    def weights(
        self, logits: torch.Tensor, y: torch.Tensor, losses: torch.Tensor, step: int
    ) -> torch.Tensor:
        """(B, K) weights of the batch's candidate losses ``losses`` (B, K) at recommender ``step``."""
        raise NotImplementedError

    @torch.no_grad()
    def probabilities(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(B, K) per-example weights for inspection (no noise, no state change)."""
        losses = self.candidate_set(logits.detach(), y)
        return self.weights(logits.detach(), y, losses, self.num_steps).detach()

    def should_update(self, step: int) -> bool:
        """Whether to call :meth:`update` after recommender step ``step`` (0-based)."""
        return self.update_every > 0 and (step + 1) % self.update_every == 0

    def update(
        self,
        model: nn.Module | None = None,
        x_valid: Any = None,
        y_valid: torch.Tensor | None = None,
        *,
        train_batch: tuple[Any, ...] | None = None,
        regularization: Regularization | None = None,
        valid_rows: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Learn (one step of the policy's own optimiser); returns scalars to log.

        ``train_batch``: the step's ``(x, y)`` or ``(x, y, rows)``; ``valid_rows``: the positions
        of the validation batch in its split (both only for per-example memories)."""
        return {}

    def stats(self) -> dict[str, float]:
        """Scalars to log about the last training call: mean weight per candidate, overall and
        per class (``p_<name>``, ``p_<name>_y<c>``)."""
        out: dict[str, float] = {}
        if self._last is None:
            return out
        y, w, classes, _ = self._last
        w = w.float()
        mean = w.mean(0)
        for k, n in enumerate(self.candidates):
            out[f"p_{n}"] = float(mean[k])
        for c in range(classes):
            mask = y == c
            if bool(mask.any()):
                mc = w[mask].mean(0)
                for k, n in enumerate(self.candidates):
                    out[f"p_{n}_y{c}"] = float(mc[k])
        return out

    def set_grad_sync(self, sync: GradSync | None) -> None:
        """Have the policy's own optimiser (if it has one) call ``sync`` on its parameters right
        before each step: a distributed run averages the gradients of its ranks there."""
        optimizer = getattr(self, "policy_optimizer", None)
        if optimizer is not None:
            optimizer.sync = sync

    def controller_state(self) -> dict[str, Any] | None:
        """What to save as ``controller.pt`` (weights_only-loadable), or None."""
        return None

    def describe(self) -> dict[str, Any]:
        """Small JSON-able summary for result.json (e.g. learnt global weights)."""
        return {}

    # -- resume: counters and optimiser state travel in state_dict() (weights_only-loadable)
    def get_extra_state(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict):
            self.num_steps = int(state.get("num_steps", 0))
