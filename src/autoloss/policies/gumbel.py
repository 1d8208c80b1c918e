"""The Gumbel-softmax controller shared by AutoLoss and SLF, and its saved form (``controller.pt``).

The controller sees each example's label and the recommender's detached prediction and outputs
α (B, K), a distribution over the K candidate losses. A :class:`GumbelSelector` draws
``p = softmax((log α + g) / τ)`` with ``τ = max(τ_min, τ_start - τ_decay·t)`` (t = the recommender's
step), soft or straight-through hard, or uses α directly (``gumbel=False``).

Controller input (:func:`controller_input`): binary ``[y, sigmoid(s)]`` (B, 2) — one 0/1 label
column is enough for two classes; multi-class ``[onehot(y), softmax(s)]`` (B, 2C). The width is
known when the policy is built (from ``num_classes``).

A trained controller is saved as ``controller.pt`` (:func:`controller_state`) and read back frozen
by :func:`load_controller`::

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

from autoloss.errors import CheckpointError, ConfigError
from autoloss.files import load_state
from autoloss.losses import CandidateSet, example_ce
from autoloss.ops import dropout, row_log_softmax, row_softmax

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
    probs = torch.sigmoid(s) if s.dim() == 1 else row_softmax(s)
    return controller_input_from_probs(y, probs)


def input_dim(num_classes: int) -> int:
    """Width of the controller input for ``num_classes`` classes (2 for binary, 2C otherwise)."""
    return 2 if num_classes == 2 else 2 * num_classes


#: Features the controller may see; ``label`` and ``prediction`` always (the paper's input).
INPUTS = ("label", "prediction", "losses", "margin", "progress", "history")
DEFAULT_INPUTS = ("label", "prediction")


@dataclass(frozen=True)
class ControllerInputs:
    """What the controller sees of an example: the paper's ``[y, ŷ]`` and optionally

    * ``losses``: the K candidate losses of the example, ``log1p(ℓ_k)`` (detached; their scale
      differs by candidate, the log keeps large values in range);
    * ``margin``: ``tanh(m / 4)`` with m = ``(2y-1)·s`` (binary) or ``s_y - max_{c≠y} s_c``;
    * ``progress``: the fraction of the planned training steps taken, ``min(1, t / total_steps)``;
    * ``history``: the example's cross-entropy at its previous visit, ``[log1p(ce_prev), seen]``
      (0, 0 at the first visit), from a :class:`LossHistory` (noisy labels are learned late: their
      loss stays high from visit to visit).

    Shapes: logits (B,) or (B, C), y (B,) -> (B, width).
    """

    names: tuple[str, ...] = DEFAULT_INPUTS
    num_classes: int = 2
    candidate_set: CandidateSet | None = None
    total_steps: int | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in INPUTS]
        if unknown or len(set(self.names)) != len(self.names):
            raise ConfigError(
                f"loss.controller_inputs {list(self.names)}: names from {', '.join(INPUTS)}, "
                "each once"
            )
        if tuple(self.names[:2]) != DEFAULT_INPUTS:
            raise ConfigError("loss.controller_inputs must start with label,prediction")
        if "losses" in self.names and self.candidate_set is None:
            raise ConfigError("controller input 'losses' needs the candidate set")
        if "progress" in self.names and not (self.total_steps and self.total_steps > 0):
            raise ConfigError(
                "controller input 'progress' needs the run's planned steps (total_steps)"
            )

    @property
    def width(self) -> int:
        extra = {"losses": len(self.candidate_set or ()), "margin": 1, "progress": 1, "history": 2}
        return input_dim(self.num_classes) + sum(extra[n] for n in self.names[2:])

    def __call__(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        step: int,
        history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The (B, width) input; ``history`` is :meth:`LossHistory.features` of the batch."""
        x = controller_input(logits, y)
        if len(self.names) == 2:
            return x
        s = logits.detach()
        cols = [x]
        for name in self.names[2:]:
            if name == "history":
                if history is None:
                    raise ValueError("the 'history' controller input needs the batch's rows")
                cols.append(history.to(x.dtype))
            elif name == "losses":
                assert self.candidate_set is not None
                cols.append(torch.log1p(self.candidate_set(s, y).clamp_min(0)).to(x.dtype))
            elif name == "margin":
                cols.append(torch.tanh(_margin(s, y) / 4).unsqueeze(1).to(x.dtype))
            else:  # progress
                frac = min(1.0, step / float(self.total_steps or 1))
                cols.append(x.new_full((x.shape[0], 1), frac))
        return torch.cat(cols, dim=1)


class LossHistory(nn.Module):
    """Each example's cross-entropy at its previous visit, per split (``train``, ``valid``).

    One float per row of each split (NaN: not seen yet), saved with the policy (checkpoints). A
    step's losses are *staged* and written at the next step (:meth:`commit`), so the policy's
    validation update, which sees the same training rows, reads their previous visit too.
    """

    prev_train: torch.Tensor
    prev_valid: torch.Tensor

    def __init__(self, train_rows: int, valid_rows: int) -> None:
        super().__init__()
        self.register_buffer("prev_train", torch.full((int(train_rows),), float("nan")))
        self.register_buffer("prev_valid", torch.full((int(valid_rows),), float("nan")))
        self._staged: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def memory(self, split: str) -> torch.Tensor:
        if split not in ("train", "valid"):
            raise ValueError(f"no loss history for split {split!r}")
        return self.prev_train if split == "train" else self.prev_valid

    def features(self, split: str, rows: torch.Tensor) -> torch.Tensor:
        """``[log1p(ce_prev), seen]`` (B, 2) of the rows ``rows`` of ``split``."""
        mem = self.memory(split)
        prev = mem[rows.to(mem.device)]
        seen = ~torch.isnan(prev)
        return torch.stack([torch.where(seen, torch.log1p(prev), 0.0), seen.to(prev.dtype)], 1)

    @torch.no_grad()
    def stage(self, split: str, rows: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        mem = self.memory(split)
        ce = example_ce(logits.detach(), y).to(mem.dtype)
        self._staged.append((split, rows.to(mem.device), ce))

    @torch.no_grad()
    def commit(self) -> None:
        for split, rows, ce in self._staged:
            self.memory(split)[rows] = ce
        self._staged = []


def _margin(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if s.dim() == 1:
        return (2 * y.to(s.dtype) - 1) * s
    true = s.gather(1, y.long()[:, None]).squeeze(1)
    others = s.scatter(1, y.long()[:, None], float("-inf")).amax(1)
    return true - others


def temperature(step: int, start: float = 1.0, decay: float = 5e-5, minimum: float = 0.01) -> float:
    """Gumbel-softmax temperature ``max(minimum, start - decay·step)``."""
    return max(minimum, start - decay * step)


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
    soft = row_softmax((log_alpha + g) / tau)
    if not hard:
        return soft
    index = soft.argmax(dim=-1, keepdim=True)
    one_hot = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return one_hot + (soft - soft.detach())  # value exactly one-hot, gradient of the soft sample


# ---------------------------------------------------------------------------------------------
# The controller network


#: What a controller's head gives: ``softmax`` (α on the simplex: AutoLoss, SLF) or ``magnitude``
#: (``2·sigmoid``, each in (0, 2), starting at 1: the per-example weights of ``reweight``).
OUTPUTS = ("softmax", "magnitude")


class LossController(nn.Module):
    """``x -> α``: MLP (Linear, [BatchNorm], ReLU, dropout per hidden layer), Linear to K, then
    softmax (``output="softmax"``) or ``2·sigmoid`` (``output="magnitude"``, head initialised to
    zero so that every magnitude starts at exactly 1).

    ``learn=False`` (the recommender's step) uses the batch's statistics without recording them
    and no dropout; a batch of one example uses the running statistics.

    Shapes: x (B, in_dim) -> α (B, K).

    Example:
        >>> LossController(4, in_dim=2)(torch.tensor([[0.0, 0.3], [1.0, 0.8]])).sum(1)
        tensor([1.0000, 1.0000], grad_fn=<SumBackward1>)
    """

    def __init__(
        self,
        num_candidates: int,
        in_dim: int,
        hidden: Sequence[int] = (128, 128),
        dropout: float = 0.2,
        *,
        batch_norm: bool = True,
        output: str = "softmax",
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"loss.controller_dropout must be in [0, 1), got {dropout}")
        if any(h < 1 for h in hidden):
            raise ConfigError(f"loss.controller_hidden sizes must be >= 1, got {list(hidden)}")
        if output not in OUTPUTS:
            raise ConfigError(f"controller output {output!r}: one of {', '.join(OUTPUTS)}")
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.output = output
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = self.in_dim
        for h in self.hidden:
            self.linears.append(nn.Linear(width, h))
            if self.batch_norm:
                self.norms.append(nn.BatchNorm1d(h))
            width = h
        self.head = nn.Linear(width, num_candidates)
        if output == "magnitude":
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

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
        return row_log_softmax(self.head(self._hidden(x, learn)))

    def magnitudes(self, x: torch.Tensor, *, learn: bool = True) -> torch.Tensor:
        """``2·sigmoid(head)`` (B, K), each in (0, 2): per-example, per-candidate magnitudes."""
        return 2 * torch.sigmoid(self.head(self._hidden(x, learn)))

    def _hidden(self, x: torch.Tensor, learn: bool) -> torch.Tensor:
        for i, lin in enumerate(self.linears):
            x = lin(x)
            x = F.relu(self._norm(self.norms[i], x, learn) if self.batch_norm else x)
            if learn:
                x = dropout(x, self.dropout, self.training)
        return x

    def forward(self, x: torch.Tensor, *, learn: bool = True) -> torch.Tensor:
        if self.output == "magnitude":
            return self.magnitudes(x, learn=learn)
        return self.log_alpha(x, learn=learn).exp()


# ---------------------------------------------------------------------------------------------
# The selector: controller + temperature schedule + sampling (AutoLoss and SLF)


@dataclass(frozen=True)
class Temperature:
    """The Gumbel-softmax temperature schedule ``τ(t) = max(minimum, start - decay·t)``."""

    start: float = 1.0
    decay: float = 5e-5
    minimum: float = 0.01

    def __post_init__(self) -> None:
        if not (self.minimum > 0 and math.isfinite(self.minimum)):
            raise ConfigError(f"loss.tau_min must be > 0, got {self.minimum}")
        if not self.start >= self.minimum:
            raise ConfigError(
                f"loss.tau_start ({self.start}) must be >= loss.tau_min ({self.minimum})"
            )
        if not self.decay >= 0:
            raise ConfigError(f"loss.tau_decay must be >= 0, got {self.decay}")

    def __call__(self, step: int) -> float:
        return temperature(step, self.start, self.decay, self.minimum)

    @classmethod
    def annealed_over(cls, steps: float, start: float = 1.0, minimum: float = 0.01) -> Temperature:
        """The schedule that reaches ``minimum`` after ``steps`` steps (linear from ``start``)."""
        if not steps > 0:
            raise ConfigError(f"the τ annealing needs a positive number of steps, got {steps}")
        return cls(start, (start - minimum) / steps, minimum)


class GumbelSelector(nn.Module):
    """A :class:`LossController` and how its α becomes weights: Gumbel-softmax samples at the
    scheduled τ (soft or straight-through ``hard``), or α itself (``gumbel=False``).

    Shapes: logits (B,) or (B, C), y (B,) -> log α (B, K) -> weights (B, K).
    """

    def __init__(
        self,
        network: LossController,
        tau: Temperature,
        *,
        hard: bool = False,
        gumbel: bool = True,
        inputs: ControllerInputs | None = None,
        history_rows: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.tau = tau
        self.hard = bool(hard)
        self.gumbel = bool(gumbel)
        self.inputs = inputs or ControllerInputs()
        self.history: LossHistory | None = None
        if "history" in self.inputs.names:
            if history_rows is None:
                raise ConfigError(
                    "controller input 'history' needs the sizes of the train and valid splits"
                )
            self.history = LossHistory(*history_rows)
        if self.inputs.width != network.in_dim:
            raise ConfigError(
                f"the controller takes {network.in_dim} input features; "
                f"loss.controller_inputs {list(self.inputs.names)} give {self.inputs.width}"
            )

    def log_alpha(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        step: int,
        *,
        learn: bool,
        rows: torch.Tensor | None = None,
        split: str = "train",
    ) -> torch.Tensor:
        """log α (B, K); ``rows`` (the batch's positions in ``split``) feed the history input."""
        hist = None
        if self.history is not None:
            if rows is None:
                raise ValueError("the 'history' controller input needs the batch's rows (rows=)")
            hist = self.history.features(split, rows)
        dtype = self.network.head.weight.dtype
        x = self.inputs(logits, y, step, hist).to(dtype)
        return self.network.log_alpha(x, learn=learn)

    def saved_state(
        self, method: str, num_classes: int, candidate_set: CandidateSet
    ) -> dict[str, Any]:
        """The ``controller.pt`` dict of this selector's network (:func:`controller_state`)."""
        return controller_state(
            self.network,
            method=method,
            num_classes=num_classes,
            candidate_set=candidate_set,
            inputs=self.inputs.names,
        )

    def remember(
        self, split: str, rows: torch.Tensor | None, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        """Stage this visit's losses for the history input (no-op without one)."""
        if self.history is not None and rows is not None:
            self.history.stage(split, rows, logits, y)

    def noise(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """The Gumbel noise of one sample (a method so that tests can fix it)."""
        return sample_gumbel(log_alpha)

    def sample(self, log_alpha: torch.Tensor, step: int) -> torch.Tensor:
        """Weights (B, K) from log α at recommender step ``step``."""
        if not self.gumbel:
            return log_alpha.exp()
        return gumbel_softmax(
            log_alpha, self.tau(step), hard=self.hard, noise=self.noise(log_alpha)
        )


# ---------------------------------------------------------------------------------------------
# Saved controllers


def controller_state(
    network: LossController,
    *,
    method: str,
    num_classes: int,
    candidate_set: CandidateSet,
    inputs: Sequence[str] = DEFAULT_INPUTS,
) -> dict[str, Any]:
    """The ``controller.pt`` dict (weights_only-loadable)."""
    return {
        "format": CONTROLLER_FORMAT,
        "method": method,
        "task": candidate_set.task,
        "num_classes": int(num_classes),
        "candidates": list(candidate_set.names),
        "focal_gamma": float(candidate_set.focal_gamma),
        "kl_eps": float(candidate_set.kl_eps),
        "input_dim": int(network.in_dim),
        "input_encoding": INPUT_ENCODING,
        "inputs": list(inputs),
        "hidden": list(network.hidden),
        "dropout": float(network.dropout),
        "batch_norm": network.batch_norm,
        "output": network.output,
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
    }


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
    inputs: tuple[str, ...] = DEFAULT_INPUTS

    def alpha(self, y: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """α (B, K) for labels (B,) and predicted probabilities (B,) or (B, C) (a controller that
        sees only ``[y, ŷ]``; others need their extra inputs: :class:`CheckpointError`)."""
        if self.inputs != DEFAULT_INPUTS:
            raise CheckpointError(
                f"the controller also sees {', '.join(self.inputs[2:])}: α is not a function of "
                "the label and prediction alone",
                path=self.path,
            )
        p = self.network.head.weight
        x = controller_input_from_probs(y.to(p.device), probs.to(device=p.device, dtype=p.dtype))
        with torch.no_grad():
            return self.network(x)

    def check_compatible(
        self,
        *,
        task: str,
        candidates: Sequence[str],
        num_classes: int,
        inputs: Sequence[str] = DEFAULT_INPUTS,
    ) -> None:
        """Refuse use on another task type, class count, candidate set or input set."""
        if tuple(inputs) != self.inputs:
            raise CheckpointError(
                f"the controller was trained with inputs {','.join(self.inputs)}; this run uses "
                f"{','.join(inputs)} (set loss.controller_inputs={','.join(self.inputs)})",
                path=self.path,
            )
        if self.task != task:
            raise CheckpointError(
                f"the controller was trained on a {self.task} task; this run is {task}",
                path=self.path,
            )
        if list(self.candidates) != list(candidates):
            raise CheckpointError(
                f"the controller was trained with candidates {','.join(self.candidates)}; this "
                f"run uses {','.join(candidates)} (pass --candidates {','.join(self.candidates)})",
                path=self.path,
            )
        if self.num_classes != num_classes:
            raise CheckpointError(
                f"the controller was trained for {self.num_classes} classes; this dataset has "
                f"{num_classes}",
                path=self.path,
            )


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
    state = load_state(
        p, "controller file", "use another controller, or train the run that wrote it again"
    )
    fmt = state.get("format") if isinstance(state, dict) else None
    if isinstance(fmt, str) and fmt.startswith("autoloss-controller-") and fmt != CONTROLLER_FORMAT:
        raise CheckpointError(
            f"controller format {fmt!r} is not {CONTROLLER_FORMAT!r} (written by another version "
            "of autoloss): use a controller this version wrote",
            path=p,
        )
    if fmt != CONTROLLER_FORMAT:
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
            len(names),
            int(state["input_dim"]),
            hidden,
            float(state["dropout"]),
            batch_norm=bool(state.get("batch_norm", True)),  # older files: the AutoLoss net
            output=str(state.get("output", "softmax")),
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
        inputs=tuple(str(n) for n in state.get("inputs", DEFAULT_INPUTS)),
    )
