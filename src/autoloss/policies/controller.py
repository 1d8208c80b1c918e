"""AutoLoss (Zhao et al., KDD 2021): an example-wise controller over the candidate losses.

The controller sees each training example's label and the recommender's detached prediction and
outputs α (B, K), a distribution over the K candidate losses. ``autoloss`` draws Gumbel-softmax
samples ``p = softmax((log α + g) / τ)`` with ``τ = max(τ_min, τ_start - τ_decay·t)`` (t = the
recommender's step), soft or straight-through hard; ``autoloss-soft`` (ablation AL-2) uses α
directly. The recommender trains on ``mean_b Σ_k p_k ℓ_k`` with p constant; the controller learns on
validation batches every f steps (:class:`~autoloss.policies.bilevel.BilevelPolicy`).

Controller input (``controller_input``): binary ``[y, sigmoid(s)]`` (B, 2) — one 0/1 label column
is enough for two classes; multi-class ``[onehot(y), softmax(s)]`` (B, 2C).

A trained controller is saved as ``controller.pt`` (:meth:`AutoLossPolicy.controller_state`) and
``loss.controller = PATH`` loads it frozen for transfer to another model or dataset of the same task
type and candidate set (:func:`load_controller`)::

    >>> ctrl = load_controller("runs/deepfm-autoloss/controller.pt")       # doctest: +SKIP
    >>> ctrl.alpha(torch.tensor([0, 1]), torch.tensor([0.2, 0.9])).shape  # doctest: +SKIP
    torch.Size([2, 4])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import UninitializedParameter

from autoloss.errors import CheckpointError, ConfigError
from autoloss.losses import CandidateSet, candidate_losses
from autoloss.policies import register_policy
from autoloss.policies.base import PolicyInput
from autoloss.policies.bilevel import BilevelPolicy
from autoloss.train.checkpoint import load_state
from autoloss.train.config import LossConfig

CONTROLLER_FORMAT = "autoloss-controller-1"
INPUT_ENCODING = "binary: [y, sigmoid(logit)]; multiclass: [onehot(y), softmax(logits)]"


# ---------------------------------------------------------------------------------------------
# Inputs, temperature, Gumbel-softmax


def controller_input_from_probs(y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``[y, ŷ]`` from labels (B,) and probabilities (B,) binary or (B, C): (B, 2) or (B, 2C)."""
    if probs.dim() == 1:
        return torch.stack([y.to(probs.dtype), probs], dim=1)
    onehot = F.one_hot(y.long(), probs.shape[1]).to(probs.dtype)
    return torch.cat([onehot, probs], dim=1)


def controller_input(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Controller input from recommender logits (detached here) and labels.

    Shapes: logits (B,) -> (B, 2) ``[y, sigmoid(s)]``; logits (B, C) -> (B, 2C)
    ``[onehot(y), softmax(s)]``.
    """
    s = logits.detach()
    probs = torch.sigmoid(s) if s.dim() == 1 else torch.softmax(s, dim=1)
    return controller_input_from_probs(y, probs)


def input_dim(num_classes: int) -> int:
    return 2 if num_classes == 2 else 2 * num_classes


def temperature(step: int, start: float = 1.0, decay: float = 5e-5, minimum: float = 0.01) -> float:
    """Gumbel-softmax temperature ``max(minimum, start - decay·step)``."""
    return max(minimum, start - decay * step)


def check_temperature(cfg: LossConfig) -> None:
    if not (cfg.tau_min > 0 and math.isfinite(cfg.tau_min)):
        raise ConfigError(f"loss.tau_min must be > 0, got {cfg.tau_min}")
    if not cfg.tau_start >= cfg.tau_min:
        raise ConfigError(
            f"loss.tau_start ({cfg.tau_start}) must be >= loss.tau_min ({cfg.tau_min})"
        )
    if not cfg.tau_decay >= 0:
        raise ConfigError(f"loss.tau_decay must be >= 0, got {cfg.tau_decay}")


def sample_gumbel(like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel(0, 1) noise of ``like``'s shape, dtype and device (global torch RNG)."""
    u = torch.rand_like(like)
    tiny = torch.finfo(like.dtype).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1.0 - torch.finfo(like.dtype).eps)))


def gumbel_softmax(
    log_alpha: torch.Tensor,
    tau: float,
    *,
    hard: bool = False,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax((log α + g) / τ)`` over the last dimension, g ~ Gumbel(0, 1).

    With ``hard`` the forward value is the one-hot argmax and the gradient is the soft sample's
    (straight-through).
    """
    g = sample_gumbel(log_alpha) if noise is None else noise
    soft = torch.softmax((log_alpha + g) / tau, dim=-1)
    if not hard:
        return soft
    index = soft.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return one_hot + (soft - soft.detach())  # value exactly one-hot, gradient of the soft sample


# ---------------------------------------------------------------------------------------------
# The controller network


class LossController(nn.Module):
    """``x -> α``: MLP (Linear, BatchNorm, ReLU, dropout per hidden layer), Linear to K, softmax.

    ``in_dim=None`` defers the first layer's input size to the first call (multi-class tasks whose
    class count the policy learns from the data). ``learn=False`` (the recommender's step) uses
    the batch's statistics without recording them and no dropout; a batch of one example uses the
    running statistics.

    Shapes: x (B, in_dim) -> α (B, K).

    Example:
        >>> LossController(4, in_dim=2)(torch.tensor([[0.0, 0.3], [1.0, 0.8]])).sum(1)
        tensor([1.0000, 1.0000], grad_fn=<SumBackward1>)
    """

    def __init__(
        self,
        num_candidates: int,
        in_dim: int | None,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"loss.controller_dropout must be in [0, 1), got {dropout}")
        if any(h < 1 for h in hidden):
            raise ConfigError(f"loss.controller_hidden sizes must be >= 1, got {list(hidden)}")
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_dim
        for h in self.hidden:
            self.linears.append(nn.Linear(width, h) if width is not None else nn.LazyLinear(h))
            self.norms.append(nn.BatchNorm1d(h))
            width = h
        self.head = (
            nn.Linear(width, num_candidates) if width is not None else nn.LazyLinear(num_candidates)
        )

    @property
    def materialized(self) -> bool:
        return not any(isinstance(p, UninitializedParameter) for p in self.parameters())

    @property
    def first_layer(self) -> nn.Linear:
        first = self.linears[0] if len(self.linears) else self.head
        assert isinstance(first, nn.Linear)
        return first

    @property
    def in_dim(self) -> int | None:
        w = self.first_layer.weight
        return None if isinstance(w, UninitializedParameter) else int(w.shape[1])

    def materialize(self, in_dim: int) -> None:
        """Create a deferred first layer for inputs of width ``in_dim`` (no-op when it exists)."""
        if self.materialized:
            if self.in_dim != in_dim:
                raise ConfigError(f"controller input width is {self.in_dim}, data needs {in_dim}")
            return
        first = self.first_layer
        with torch.no_grad():
            first(torch.zeros(1, in_dim, dtype=first.weight.dtype, device=first.weight.device))

    @staticmethod
    def _norm(bn: nn.Module, x: torch.Tensor, learn: bool) -> torch.Tensor:
        assert isinstance(bn, nn.BatchNorm1d)
        if not bn.training or x.shape[0] < 2:
            return F.batch_norm(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps
            )
        if learn:
            return bn(x)
        return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)

    def log_alpha(self, x: torch.Tensor, *, learn: bool = True) -> torch.Tensor:
        """log α (B, K), computed as a log-softmax (stable for the Gumbel perturbation).

        ``learn`` (default): a forward of the controller's own training step, BatchNorm records
        running statistics and dropout is active (in training mode). ``learn=False``: the
        controller only weights the recommender's losses, BatchNorm normalises with the batch's
        statistics without recording them and dropout is off, so the forward changes nothing.
        """
        for lin, bn in zip(self.linears, self.norms):
            x = F.relu(self._norm(bn, lin(x), learn))
            if learn:
                x = F.dropout(x, self.dropout, self.training)
        return F.log_softmax(self.head(x), dim=-1)

    def forward(self, x: torch.Tensor, *, learn: bool = True) -> torch.Tensor:
        return self.log_alpha(x, learn=learn).exp()


# ---------------------------------------------------------------------------------------------
# Saved controllers


@dataclass
class LoadedController:
    """A controller read from ``controller.pt``: frozen (no gradient), eval mode."""

    path: Path
    method: str
    task: str
    num_classes: int
    candidates: list[str]
    hidden: list[int]
    dropout: float
    network: LossController
    meta: dict[str, Any]

    def alpha(self, y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """α (B, K) for labels (B,) and predicted probabilities (B,) or (B, C)."""
        p = self.network.head.weight
        x = controller_input_from_probs(y.to(p.device), probs.to(device=p.device, dtype=p.dtype))
        with torch.no_grad():
            return self.network(x)


_REQUIRED = (
    "method",
    "task",
    "num_classes",
    "candidates",
    "input_dim",
    "hidden",
    "dropout",
    "state_dict",
)


def load_controller(path: str | Path) -> LoadedController:
    """Read and rebuild a saved controller; :class:`CheckpointError` if missing, corrupt or foreign."""
    p = Path(path)
    state = load_state(p, "controller file")
    if not isinstance(state, dict) or state.get("format") != CONTROLLER_FORMAT:
        raise CheckpointError(
            "not an autoloss controller file (expected the controller.pt of an autoloss run)",
            path=p,
        )
    missing = [k for k in _REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"controller file lacks {', '.join(missing)}", path=p)
    try:
        names = [str(n) for n in state["candidates"]]
        hidden = [int(h) for h in state["hidden"]]
        network = LossController(
            len(names), int(state["input_dim"]), hidden, float(state["dropout"])
        )
        network.load_state_dict(state["state_dict"])
    except (RuntimeError, ValueError, TypeError, KeyError, ConfigError) as exc:
        raise CheckpointError(
            f"controller weights do not match their spec: {str(exc).splitlines()[0]}", path=p
        ) from None
    network.eval()
    network.requires_grad_(False)
    return LoadedController(
        path=p,
        method=str(state["method"]),
        task=str(state["task"]),
        num_classes=int(state["num_classes"]),
        candidates=names,
        hidden=hidden,
        dropout=float(state["dropout"]),
        network=network,
        meta={k: v for k, v in state.items() if k != "state_dict"},
    )


def check_compatible(
    ctrl: LoadedController, *, task: str, candidates: Sequence[str], num_classes: int | None = None
) -> None:
    """Refuse a controller trained for another task type, class count or candidate set."""
    if ctrl.task != task:
        raise CheckpointError(
            f"the controller was trained on a {ctrl.task} task; this run is {task}", path=ctrl.path
        )
    if list(ctrl.candidates) != list(candidates):
        raise CheckpointError(
            f"the controller was trained with candidates {','.join(ctrl.candidates)}; this run "
            f"uses {','.join(candidates)} (pass --candidates {','.join(ctrl.candidates)})",
            path=ctrl.path,
        )
    if num_classes is not None and ctrl.num_classes != num_classes:
        raise CheckpointError(
            f"the controller was trained for {ctrl.num_classes} classes; this dataset has "
            f"{num_classes}",
            path=ctrl.path,
        )


def controller_state(
    network: LossController,
    *,
    method: str,
    task: str,
    num_classes: int,
    candidates: CandidateSet,
) -> dict[str, Any] | None:
    """The ``controller.pt`` dict (weights_only-loadable), or None before the network exists."""
    if not network.materialized:
        return None
    return {
        "format": CONTROLLER_FORMAT,
        "method": method,
        "task": task,
        "num_classes": int(num_classes),
        "candidates": list(candidates.names),
        "focal_gamma": float(candidates.focal_gamma),
        "kl_eps": float(candidates.kl_eps),
        "input_dim": int(network.in_dim or 0),
        "input_encoding": INPUT_ENCODING,
        "hidden": list(network.hidden),
        "dropout": float(network.dropout),
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
    }


def policy_candidates(cfg: LossConfig, task: str) -> CandidateSet:
    return candidate_losses(cfg.candidates, task, focal_gamma=cfg.focal_gamma, kl_eps=cfg.kl_eps)


# ---------------------------------------------------------------------------------------------
# The policy


class AutoLossPolicy(BilevelPolicy):
    """``autoloss`` (Gumbel-softmax samples) and ``autoloss-soft`` (α directly).

    ``cfg.controller`` set: the saved controller is loaded frozen (no gradient, eval mode,
    ``update_every = 0`` so the trainer draws no validation batches).
    """

    def __init__(
        self,
        candidates: CandidateSet,
        cfg: LossConfig,
        task: str,
        *,
        gumbel: bool = True,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(candidates, cfg)
        check_temperature(cfg)
        self.name = "autoloss" if gumbel else "autoloss-soft"
        self.gumbel = gumbel
        self.hard = bool(cfg.hard)
        self.task = task
        self.num_classes: int | None = 2 if task == "binary" else num_classes
        self.tau_start, self.tau_decay, self.tau_min = cfg.tau_start, cfg.tau_decay, cfg.tau_min
        self.frozen_from: str | None = None
        self.last_step = 0
        self._alpha_sum: torch.Tensor | None = None
        self._alpha_n = 0
        k = len(candidates)
        if cfg.controller:
            loaded = load_controller(cfg.controller)
            check_compatible(
                loaded, task=task, candidates=candidates.names, num_classes=self.num_classes
            )
            self.controller = loaded.network
            self.num_classes = loaded.num_classes
            self.frozen_from = str(cfg.controller)
            self.update_every = 0
        else:
            dim = input_dim(self.num_classes) if self.num_classes is not None else None
            self.controller = LossController(k, dim, cfg.controller_hidden, cfg.controller_dropout)

    @property
    def frozen(self) -> bool:
        return self.frozen_from is not None

    def train(self, mode: bool = True) -> AutoLossPolicy:
        super().train(mode)
        if self.frozen:
            self.controller.eval()
        return self

    def before_training(self, trainer: Any) -> None:
        """Fix the input width from the dataset's class count; check a transferred controller."""
        num_classes = int(trainer.spec.num_classes)
        if self.frozen:
            if self.num_classes != num_classes:
                raise CheckpointError(
                    f"the controller was trained for {self.num_classes} classes; this dataset has "
                    f"{num_classes}",
                    path=self.frozen_from,
                )
            return
        self.controller.materialize(input_dim(num_classes))
        self.num_classes = num_classes

    def tau(self, step: int) -> float:
        return temperature(step, self.tau_start, self.tau_decay, self.tau_min)

    def gumbel_noise(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """The Gumbel noise of one sample (a method so that tests can fix it)."""
        return sample_gumbel(log_alpha)

    def policy_weights(
        self, logits: torch.Tensor, y: torch.Tensor, step: int, *, own_step: bool = False
    ) -> torch.Tensor:
        dtype = self.controller.head.weight.dtype
        x = controller_input(logits, y).to(dtype)
        log_alpha = self.controller.log_alpha(x, learn=own_step)
        if not own_step:
            self.last_step = step
            a = log_alpha.detach().exp().sum(0)
            self._alpha_sum = a if self._alpha_sum is None else self._alpha_sum + a
            self._alpha_n += x.shape[0]
        if not self.gumbel:
            return log_alpha.exp().to(logits.dtype)
        p = gumbel_softmax(
            log_alpha, self.tau(step), hard=self.hard, noise=self.gumbel_noise(log_alpha)
        )
        return p.to(logits.dtype)

    def stats(self, inp: PolicyInput, weights: torch.Tensor) -> dict[str, float]:
        out = super().stats(inp, weights)
        if self.gumbel:
            out["tau"] = self.tau(inp.step)
        if self._alpha_sum is not None and self._alpha_n:
            mean = (self._alpha_sum / self._alpha_n).tolist()
            for n, v in zip(self.candidates.names, mean):
                out[f"alpha_{n}"] = float(v)  # mean α since the previous log line
            self._alpha_sum, self._alpha_n = None, 0
        return out

    def controller_state(self) -> dict[str, Any] | None:
        return controller_state(
            self.controller,
            method=self.name,
            task=self.task,
            num_classes=self.num_classes or 0,
            candidates=self.candidates,
        )

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "gumbel": self.gumbel,
            "hard": self.hard,
            "controller_updates": self.updates,
        }
        if self.frozen:
            out["controller"] = self.frozen_from
            out["frozen"] = True
        else:
            out.update(mode=self.mode, update_every=self.update_every)
            if self.mode == "unrolled":
                out.update(xi=self.xi, unrolled_impl=self.unrolled_impl)
        if self.gumbel:
            out["tau_final"] = self.tau(self.last_step)
        return out


def _factory(gumbel: bool) -> Any:
    def make(cfg: LossConfig, task: str) -> AutoLossPolicy:
        return AutoLossPolicy(policy_candidates(cfg, task), cfg, task, gumbel=gumbel)

    return make


register_policy("autoloss", _factory(True))
register_policy("autoloss-soft", _factory(False))
