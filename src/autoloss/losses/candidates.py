"""Candidate losses: per-example losses computed from logits, and their registry.

A candidate maps ``(logits, y)`` to a per-example loss (``reduction='none'``): logits ``(B,)`` with
labels in {0, 1} for a binary task, logits ``(B, C)`` with int64 labels in ``0..C-1`` for a
multi-class task. :func:`candidate_losses` builds a :class:`CandidateSet`, which evaluates K
candidates in one call and returns the ``(B, K)`` matrix the loss policies weight::

    >>> cs = candidate_losses("focal,kl,hinge,ce", "binary")
    >>> cs(torch.tensor([0.0, 3.0]), torch.tensor([1, 0])).shape
    torch.Size([2, 4])

Every built-in is written in log space (``logsigmoid`` / ``log_softmax``), so values and gradients
stay finite at ``|logit| = 1e4``. The set computes the shared log-probabilities once per call: this
runs every training step. See ``docs/losses.md`` for the definitions.

``tce`` (truncated cross-entropy) depends on the recommender step (its drop rate ramps up): the
owner of the set passes it as ``cs(logits, y, step=t)`` or sets ``cs.step = t`` before calling.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from autoloss.errors import ConfigError, RegistryError
from autoloss.ops import row_log_softmax

Task = Literal["binary", "multiclass"]
LossFn = Callable[[Tensor, Tensor], Tensor]

#: The paper's candidate set, in the paper's order.
DEFAULT_CANDIDATES: tuple[str, ...] = ("focal", "kl", "hinge", "ce")
DEFAULT_FOCAL_GAMMA = 2.0
DEFAULT_KL_EPS = 0.1
DEFAULT_GCE_Q = 0.7
DEFAULT_TCE_DROP = 0.2
DEFAULT_TCE_RAMP_STEPS = 10000
TASKS: tuple[str, ...] = ("binary", "multiclass")


@dataclass(frozen=True)
class CandidateLoss:
    """One named candidate loss.

    ``binary(logits (B,), y (B,)) -> (B,)`` and ``multiclass(logits (B, C), y (B,)) -> (B,)``; a
    custom candidate may leave ``multiclass`` as ``None`` (binary tasks only).
    """

    name: str
    binary: LossFn
    multiclass: LossFn | None = None
    doc: str = ""

    def fn(self, task: str) -> LossFn:
        """The function for ``task`` ("binary" or "multiclass")."""
        if task == "binary":
            return self.binary
        if self.multiclass is None:
            raise ConfigError(
                f"candidate loss {self.name!r} has no multi-class function "
                "(register one with register_candidate(..., multiclass=fn))"
            )
        return self.multiclass


# --------------------------------------------------------------------------------------------
# Shared intermediates. Each property is computed at most once per CandidateSet call.


def check_labels(
    y: Any, task: str, classes: int | None = None, *, rows: int | None = None, name: str = "y"
) -> None:
    """A ``ValueError`` naming ``name`` unless ``y`` is a (rows,) tensor of labels of ``task``:
    0/1 (bool, integer, or float 0.0/1.0) for binary, integer class ids 0..classes-1 otherwise
    (at least 0 where ``classes`` is None)."""
    if not isinstance(y, Tensor):
        raise ValueError(f"{name}: expected a torch tensor of labels, got {type(y).__name__}")
    if y.dim() != 1 or (rows is not None and y.shape[0] != rows):
        want = f"({rows},), one label per row of the logits" if rows is not None else "(B,)"
        raise ValueError(f"{name}: shape {tuple(y.shape)}; expected {want}")
    if y.shape[0] == 0:
        raise ValueError(f"{name}: a batch of zero rows")
    if y.dtype == torch.bool and task == "binary":
        return
    if y.is_complex() or y.dtype == torch.bool or (y.is_floating_point() and task != "binary"):
        raise ValueError(f"{name}: dtype {y.dtype}; class ids must be integers")
    top = 1 if task == "binary" else None if classes is None else classes - 1
    if y.is_floating_point():
        bad = (y != 0) & (y != 1)
    else:
        bad = y < 0 if top is None else (y < 0) | (y > top)
    if bool(bad.any()):
        allowed = "{0, 1}" if task == "binary" else "0..C-1" if top is None else f"0..{top}"
        raise ValueError(f"{name}: label {y[bad][0].item()!r} outside {allowed}")


def check_batch(logits: Any, y: Any, task: str, num_classes: int | None = None) -> None:
    """A ``ValueError`` naming the argument unless ``logits`` and ``y`` are a batch of ``task``:
    floating-point logits (B,) for binary or (B, C) for multi-class (C = ``num_classes`` when
    given), B >= 1, and labels as :func:`check_labels` says."""
    if not isinstance(logits, Tensor):
        raise ValueError(f"logits: expected a torch tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits: dtype {logits.dtype}; expected floating-point raw scores")
    shape = tuple(logits.shape)
    if task == "binary" and logits.dim() != 1:
        hint = " (logits.squeeze(-1))" if logits.dim() == 2 and shape[1] == 1 else ""
        raise ValueError(
            f"logits: shape {shape}; a binary task takes one logit per row, (B,){hint}"
        )
    if task != "binary":
        width = num_classes or (shape[1] if logits.dim() == 2 else 0)
        if logits.dim() != 2 or shape[1] != width or width < 2:
            want = f"(B, {num_classes})" if num_classes else "(B, C) with C >= 2"
            raise ValueError(f"logits: shape {shape}; this multiclass criterion takes {want}")
    if shape[0] == 0:
        raise ValueError("logits: a batch of zero rows")
    check_labels(y, task, None if task == "binary" else shape[1], rows=shape[0])


class _BinaryTerms:
    """Log-probabilities of a binary batch. ``y`` is cast to the logits' dtype."""

    def __init__(self, logits: Tensor, y: Tensor) -> None:
        if logits.dim() != 1 or y.shape != logits.shape:
            raise ValueError(
                f"binary candidates need logits (B,) and labels (B,), got logits "
                f"{tuple(logits.shape)} and labels {tuple(y.shape)}"
            )
        self.s = logits
        self.y = y.to(logits.dtype)

    @cached_property
    def log_p1(self) -> Tensor:  # log sigmoid(s) = log P(y=1)
        return F.logsigmoid(self.s)

    @cached_property
    def log_p0(self) -> Tensor:  # log sigmoid(-s) = log P(y=0); not log_p1 - s (cancellation)
        return F.logsigmoid(-self.s)

    @cached_property
    def log_pt(self) -> Tensor:  # log p_t = logsigmoid(t*s), t = 2y-1 (linear in y: BCE form)
        return self.y * self.log_p1 + (1 - self.y) * self.log_p0

    @cached_property
    def log_1m_pt(self) -> Tensor:  # log(1 - p_t) = logsigmoid(-t*s), exact even when p_t ~ 1
        return self.y * self.log_p0 + (1 - self.y) * self.log_p1


class _MulticlassTerms:
    """Log-softmax of a multi-class batch. ``y`` is cast to int64."""

    def __init__(self, logits: Tensor, y: Tensor) -> None:
        if logits.dim() != 2 or y.dim() != 1 or y.shape[0] != logits.shape[0]:
            raise ValueError(
                f"multi-class candidates need logits (B, C) and labels (B,), got logits "
                f"{tuple(logits.shape)} and labels {tuple(y.shape)}"
            )
        self.s = logits
        self.y = y.long()
        self.num_classes = logits.shape[1]

    @cached_property
    def logp(self) -> Tensor:  # (B, C)
        return row_log_softmax(self.s)

    @cached_property
    def log_pt(self) -> Tensor:  # (B,) log p_y
        return self.logp.gather(1, self.y[:, None]).squeeze(1)

    @cached_property
    def log_1m_pt(self) -> Tensor:
        # log(1 - p_y) = logsumexp over the other classes' log-probabilities: no 1 - p cancellation,
        # so (1 - p_y)^gamma and its gradient stay exact when p_y rounds to 1.
        masked = self.logp.scatter(1, self.y[:, None], float("-inf"))
        return masked.logsumexp(1)

    @cached_property
    def onehot(self) -> Tensor:
        return F.one_hot(self.y, self.num_classes).to(self.s.dtype)


def _xlogx(q: float) -> float:
    return q * math.log(q) if q > 0 else 0.0


# Built-in formulas on the shared terms. ``b_`` binary, ``m_`` multi-class.


def _b_ce(t: _BinaryTerms) -> Tensor:
    return -t.log_pt


def _m_ce(t: _MulticlassTerms) -> Tensor:
    return -t.log_pt


def _focal(t: _BinaryTerms | _MulticlassTerms, gamma: float) -> Tensor:
    if gamma == 0:
        return -t.log_pt
    # (1 - p_t)^gamma = exp(gamma * log(1 - p_t)): finite value and gradient for any gamma >= 0.
    return -torch.exp(gamma * t.log_1m_pt) * t.log_pt


def _b_kl(t: _BinaryTerms, eps: float) -> Tensor:
    q1 = t.y * (1 - eps) + eps / 2
    q0 = 1 - q1
    # sum_c q_c (log q_c - log p_c), 0 log 0 = 0 (xlogy), over the outcomes {1, 0}.
    return torch.xlogy(q1, q1) + torch.xlogy(q0, q0) - q1 * t.log_p1 - q0 * t.log_p0


def _m_kl(t: _MulticlassTerms, eps: float) -> Tensor:
    c = t.num_classes
    # q = onehot(1-eps) + eps/C; sum_c q_c log q_c is the same constant for every example.
    neg_entropy = _xlogx(1 - eps + eps / c) + (c - 1) * _xlogx(eps / c)
    cross = (1 - eps) * t.log_pt + (eps / c) * t.logp.sum(1)
    return neg_entropy - cross


def _b_hinge(t: _BinaryTerms) -> Tensor:
    return torch.relu(1 - (2 * t.y - 1) * t.s)


def _m_hinge(t: _MulticlassTerms) -> Tensor:
    # sum_{c != y} max(0, 1 - s_y + s_c) / C  (torch multi_margin_loss, p=1, margin=1)
    return F.multi_margin_loss(t.s, t.y, p=1, margin=1.0, reduction="none")


def _b_mse(t: _BinaryTerms) -> Tensor:
    return (torch.exp(t.log_p1) - t.y).square()


def _m_mse(t: _MulticlassTerms) -> Tensor:
    return (torch.exp(t.logp) - t.onehot).square().sum(1)


def _gce(t: _BinaryTerms | _MulticlassTerms, q: float) -> Tensor:
    # (1 - p_t^q) / q = -expm1(q log p_t) / q: no 1 - p cancellation as p_t -> 1, and the gradient
    # p_t^q * dlog p_t stays finite where q p_t^(q-1) (the direct form) is infinite at p_t = 0.
    return -torch.expm1(q * t.log_pt) / q


def _mae(t: _BinaryTerms | _MulticlassTerms) -> Tensor:
    # 1 - p_t = exp(log(1 - p_t)): exact (not 0) when p_t rounds to 1, e.g. sigmoid(17) in float32.
    return torch.exp(t.log_1m_pt)


def _truncate(loss: Tensor, eligible: Tensor, rate: float) -> Tensor:
    """``loss`` with the ``floor(rate * n)`` largest entries among the ``n`` eligible rows set to
    exactly 0 (value and gradient); the selection uses the detached loss, ties go to the lower row
    index. Stays on the device: no host synchronisation."""
    if rate <= 0 or loss.numel() == 0:
        return loss
    key = torch.where(eligible, loss.detach(), float("-inf"))
    order = torch.argsort(key, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(
        0, order, torch.arange(order.numel(), device=order.device)
    )
    # floor in float64 with a 1e-9 slack so that e.g. 0.29 * 100 drops 29 rows, not 28.
    n_drop = torch.floor(eligible.sum().to(torch.float64) * rate + 1e-9)
    drop = eligible & (rank < n_drop)
    # torch.where, not a product: dropped rows get an exact 0 value and an exact 0 gradient.
    return torch.where(drop, torch.zeros_like(loss), loss)


def _b_tce(t: _BinaryTerms, rate: float) -> Tensor:
    # Only positives (y = 1) can be dropped: in implicit feedback they carry the noise (ADT).
    return _truncate(-t.log_pt, t.y == 1, rate)


def _m_tce(t: _MulticlassTerms, rate: float) -> Tensor:
    # No negative class in multi-class: every example is an observed label and may be dropped.
    return _truncate(-t.log_pt, torch.ones_like(t.y, dtype=torch.bool), rate)


def tce_drop_rate(
    step: int, drop: float = DEFAULT_TCE_DROP, ramp_steps: int = DEFAULT_TCE_RAMP_STEPS
) -> float:
    """The ``tce`` drop rate at recommender ``step``: ``drop * min(1, step / ramp_steps)``."""
    if step < 0:
        raise ValueError(f"the recommender step must be >= 0, got {step}")
    return drop * min(1.0, step / ramp_steps)


# --------------------------------------------------------------------------------------------
# Public per-candidate functions (logits, y) -> (B,).


def binary_ce(logits: Tensor, y: Tensor) -> Tensor:
    """BCE with logits: ``-log sigmoid(t*s)``, t = 2y-1. Shapes (B,), (B,) -> (B,)."""
    return _b_ce(_BinaryTerms(logits, y))


def binary_focal(logits: Tensor, y: Tensor, gamma: float = DEFAULT_FOCAL_GAMMA) -> Tensor:
    """Focal loss ``-(1-p_t)^gamma log p_t`` with ``p_t = sigmoid(t*s)``."""
    return _focal(_BinaryTerms(logits, y), gamma)


def binary_kl(logits: Tensor, y: Tensor, eps: float = DEFAULT_KL_EPS) -> Tensor:
    """``KL(y_smooth || p)``, ``y_smooth = y(1-eps) + eps/2``, over the outcomes {1, 0}."""
    return _b_kl(_BinaryTerms(logits, y), eps)


def binary_hinge(logits: Tensor, y: Tensor) -> Tensor:
    """Margin on the logit: ``max(0, 1 - t*s)``, t = 2y-1."""
    return _b_hinge(_BinaryTerms(logits, y))


def binary_mse(logits: Tensor, y: Tensor) -> Tensor:
    """Squared error of the probability: ``(sigmoid(s) - y)^2``."""
    return _b_mse(_BinaryTerms(logits, y))


def multiclass_ce(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy ``-log softmax(s)_y``. Shapes (B, C), (B,) -> (B,)."""
    return _m_ce(_MulticlassTerms(logits, y))


def multiclass_focal(logits: Tensor, y: Tensor, gamma: float = DEFAULT_FOCAL_GAMMA) -> Tensor:
    """Focal loss ``-(1-p_y)^gamma log p_y`` with ``p = softmax(s)``."""
    return _focal(_MulticlassTerms(logits, y), gamma)


def multiclass_kl(logits: Tensor, y: Tensor, eps: float = DEFAULT_KL_EPS) -> Tensor:
    """``KL(y_smooth || softmax(s))``, ``y_smooth = onehot(y)(1-eps) + eps/C``."""
    return _m_kl(_MulticlassTerms(logits, y), eps)


def multiclass_hinge(logits: Tensor, y: Tensor) -> Tensor:
    """``sum_{c != y} max(0, 1 - s_y + s_c) / C`` (``multi_margin_loss``, p=1, margin=1)."""
    return _m_hinge(_MulticlassTerms(logits, y))


def multiclass_mse(logits: Tensor, y: Tensor) -> Tensor:
    """``||softmax(s) - onehot(y)||^2`` summed over classes."""
    return _m_mse(_MulticlassTerms(logits, y))


def binary_gce(logits: Tensor, y: Tensor, q: float = DEFAULT_GCE_Q) -> Tensor:
    """Generalized cross-entropy ``(1 - p_t^q) / q`` (Zhang & Sabuncu 2018), ``p_t = sigmoid(t*s)``."""
    return _gce(_BinaryTerms(logits, y), q)


def binary_mae(logits: Tensor, y: Tensor) -> Tensor:
    """Mean absolute error of the probability: ``|y - sigmoid(s)| = 1 - p_t``."""
    return _mae(_BinaryTerms(logits, y))


def binary_tce(logits: Tensor, y: Tensor, drop_rate: float) -> Tensor:
    """Truncated BCE (ADT, Wang et al. 2021): the ``floor(drop_rate * P)`` positives of the batch
    with the largest BCE (P positives) get 0, every other example its BCE."""
    return _b_tce(_BinaryTerms(logits, y), drop_rate)


def multiclass_gce(logits: Tensor, y: Tensor, q: float = DEFAULT_GCE_Q) -> Tensor:
    """Generalized cross-entropy ``(1 - p_y^q) / q`` with ``p = softmax(s)``."""
    return _gce(_MulticlassTerms(logits, y), q)


def multiclass_mae(logits: Tensor, y: Tensor) -> Tensor:
    """``1 - p_y`` = half the L1 distance ``||onehot(y) - softmax(s)||_1``."""
    return _mae(_MulticlassTerms(logits, y))


def multiclass_tce(logits: Tensor, y: Tensor, drop_rate: float) -> Tensor:
    """Truncated cross-entropy: the ``floor(drop_rate * B)`` examples of the batch with the largest
    cross-entropy get 0 (every example is eligible: a multi-class task has no negatives)."""
    return _m_tce(_MulticlassTerms(logits, y), drop_rate)


# --------------------------------------------------------------------------------------------
# Registry.

#: ``formula(terms, candidate_set, step)``: a built-in on the shared terms; it reads its
#: hyper-parameters from the set (``focal_gamma``, ...) and ``step`` is the resolved recommender step.
_BinaryFused = Callable[[_BinaryTerms, "CandidateSet", "int | None"], Tensor]
_MultiFused = Callable[[_MulticlassTerms, "CandidateSet", "int | None"], Tensor]

_BUILTINS: dict[str, tuple[CandidateLoss, _BinaryFused, _MultiFused]] = {}
_REGISTRY: dict[str, CandidateLoss] = {}


def _add_builtin(
    name: str, binary: LossFn, multiclass: LossFn, fb: _BinaryFused, fm: _MultiFused, doc: str
) -> None:
    cand = CandidateLoss(name, binary, multiclass, doc)
    _BUILTINS[name] = (cand, fb, fm)
    _REGISTRY[name] = cand


_add_builtin(
    "ce",
    binary_ce,
    multiclass_ce,
    lambda t, cs, step: _b_ce(t),
    lambda t, cs, step: _m_ce(t),
    "cross-entropy (BCE with logits for binary)",
)
_add_builtin(
    "focal",
    binary_focal,
    multiclass_focal,
    lambda t, cs, step: _focal(t, cs.focal_gamma),
    lambda t, cs, step: _focal(t, cs.focal_gamma),
    "focal loss -(1-p_t)^gamma log p_t, gamma=2",
)
_add_builtin(
    "kl",
    binary_kl,
    multiclass_kl,
    lambda t, cs, step: _b_kl(t, cs.kl_eps),
    lambda t, cs, step: _m_kl(t, cs.kl_eps),
    "KL(label-smoothed target || prediction), eps=0.1",
)
_add_builtin(
    "hinge",
    binary_hinge,
    multiclass_hinge,
    lambda t, cs, step: _b_hinge(t),
    lambda t, cs, step: _m_hinge(t),
    "hinge on the logit margin (multi_margin_loss for multi-class)",
)
_add_builtin(
    "mse",
    binary_mse,
    multiclass_mse,
    lambda t, cs, step: _b_mse(t),
    lambda t, cs, step: _m_mse(t),
    "squared error of the predicted probabilities",
)
_add_builtin(
    "gce",
    binary_gce,
    multiclass_gce,
    lambda t, cs, step: _gce(t, cs.gce_q),
    lambda t, cs, step: _gce(t, cs.gce_q),
    "generalized cross-entropy (1-p_t^q)/q, q=0.7 (bounded, noise-robust)",
)
_add_builtin(
    "mae",
    binary_mae,
    multiclass_mae,
    lambda t, cs, step: _mae(t),
    lambda t, cs, step: _mae(t),
    "mean absolute error of the probability, 1-p_t (bounded, noise-robust)",
)
_add_builtin(
    "tce",
    lambda s, y: binary_tce(s, y, DEFAULT_TCE_DROP),
    lambda s, y: multiclass_tce(s, y, DEFAULT_TCE_DROP),
    lambda t, cs, step: _b_tce(t, cs.tce_rate(step)),
    lambda t, cs, step: _m_tce(t, cs.tce_rate(step)),
    "truncated cross-entropy: the top drop_rate(t) of positives by CE get 0 (ADT)",
)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
        raise ConfigError(
            f"invalid candidate loss name {name!r}: a non-empty string without commas or "
            "surrounding spaces"
        )
    return name


def register_candidate(
    name: str,
    binary: LossFn,
    multiclass: LossFn | None = None,
    *,
    overwrite: bool = False,
    doc: str = "",
) -> CandidateLoss:
    """Register a custom candidate loss and return it.

    ``binary`` and ``multiclass`` map ``(logits, y)`` to a per-example loss of shape ``(B,)``;
    without ``multiclass`` the candidate is usable on binary tasks only. Registering a name that
    exists raises :class:`RegistryError` unless ``overwrite=True``.

    >>> register_candidate("logcosh", lambda s, y: torch.log(torch.cosh(torch.sigmoid(s) - y)))
    """
    _check_name(name)
    if not callable(binary) or (multiclass is not None and not callable(multiclass)):
        raise ConfigError(f"candidate loss {name!r}: binary/multiclass must be callables")
    if name in _REGISTRY and not overwrite:
        raise RegistryError(
            f"candidate loss {name!r} is already registered (pass overwrite=True to replace it)"
        )
    cand = CandidateLoss(name, binary, multiclass, doc or (binary.__doc__ or "").strip())
    _REGISTRY[name] = cand
    return cand


def unregister_candidate(name: str) -> None:
    """Remove a custom candidate; for a built-in name, restore the built-in definition."""
    if name in _BUILTINS:
        _REGISTRY[name] = _BUILTINS[name][0]
    elif _REGISTRY.pop(name, None) is None:
        raise RegistryError(f"unknown candidate loss {name!r}; known: {', '.join(_REGISTRY)}")


def candidate_names() -> list[str]:
    """Names of all registered candidate losses (built-ins first, in registration order)."""
    return list(_REGISTRY)


def get_candidate(name: str) -> CandidateLoss:
    """The registered candidate called ``name``; :class:`RegistryError` if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(
            f"unknown candidate loss {name!r}; known: {', '.join(_REGISTRY)}"
        ) from None


# --------------------------------------------------------------------------------------------
# Candidate sets.


class CandidateSet:
    """K candidate losses for one task, evaluated together: ``cs(logits, y) -> (B, K)``.

    Built by :func:`candidate_losses`. Column k is the per-example loss of ``cs.names[k]``.
    Built-in candidates share ``logsigmoid`` / ``log_softmax`` computed once per call.

    ``step`` is the recommender step that step-dependent candidates (``tce``'s drop-rate ramp)
    use when a call passes none: a loss policy sets it once per training step
    (``cs.step = num_steps``), so every call it makes for that step (forward, hypergradients,
    inspection) sees the same value. ``None`` (the default): ``tce`` uses its full drop rate
    ``tce_drop`` and warns once.
    """

    focal_gamma: float
    kl_eps: float
    gce_q: float
    tce_drop: float
    tce_ramp_steps: int
    step: int | None

    def __init__(
        self,
        candidates: Sequence[CandidateLoss],
        task: Task,
        *,
        focal_gamma: float = DEFAULT_FOCAL_GAMMA,
        kl_eps: float = DEFAULT_KL_EPS,
        gce_q: float = DEFAULT_GCE_Q,
        tce_drop: float = DEFAULT_TCE_DROP,
        tce_ramp_steps: int = DEFAULT_TCE_RAMP_STEPS,
    ) -> None:
        _check_params(focal_gamma, kl_eps, gce_q, tce_drop, tce_ramp_steps)
        self.candidates = tuple(candidates)
        self.task: Task = task
        self.focal_gamma = float(focal_gamma)
        self.kl_eps = float(kl_eps)
        self.gce_q = float(gce_q)
        self.tce_drop = float(tce_drop)
        self.tce_ramp_steps = operator.index(tce_ramp_steps)
        self.step = None
        self._warned_no_step = False
        self.names: tuple[str, ...] = tuple(c.name for c in self.candidates)
        # Per column: ("fused", formula on the shared terms) or ("plain", user function).
        self._columns: list[tuple[bool, Callable[..., Tensor]]] = []
        for cand in self.candidates:
            builtin = _BUILTINS.get(cand.name)
            if builtin is not None and builtin[0] is cand:
                self._columns.append((True, builtin[1] if task == "binary" else builtin[2]))
            else:
                self._columns.append((False, cand.fn(task)))

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self) -> Iterator[CandidateLoss]:
        return iter(self.candidates)

    def __repr__(self) -> str:
        return f"CandidateSet({','.join(self.names)!r}, task={self.task!r})"

    def index(self, name: str) -> int:
        """Column of candidate ``name``; :class:`RegistryError` if it is not in the set."""
        try:
            return self.names.index(name)
        except ValueError:
            raise RegistryError(
                f"candidate loss {name!r} is not in this set ({', '.join(self.names)})"
            ) from None

    def terms(self, logits: Tensor, y: Tensor) -> _BinaryTerms | _MulticlassTerms:
        if self.task == "binary":
            return _BinaryTerms(logits, y)
        return _MulticlassTerms(logits, y)

    def tce_rate(self, step: int | None) -> float:
        """``tce``'s drop rate at recommender ``step``: ``tce_drop * min(1, step / tce_ramp_steps)``;
        ``tce_drop`` (and a one-time warning) when the step is unknown."""
        if step is None:
            if not self._warned_no_step:
                self._warned_no_step = True
                warnings.warn(
                    "candidate loss 'tce' got no recommender step (cs(logits, y, step=t) or "
                    "cs.step = t): using the full drop rate loss.tce_drop without the ramp",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return self.tce_drop
        return tce_drop_rate(step, self.tce_drop, self.tce_ramp_steps)

    def __call__(self, logits: Tensor, y: Tensor, step: int | None = None) -> Tensor:
        """Per-example losses ``(B, K)`` of logits ``(B,)``/``(B, C)`` and labels ``(B,)``.

        ``step``: the recommender step (only ``tce`` uses it); ``None`` falls back to ``self.step``.
        """
        check_batch(logits, y, self.task)
        if step is None:
            step = self.step
        terms = self.terms(logits, y)
        cols = []
        for (fused, fn), name in zip(self._columns, self.names):
            if fused:
                col = fn(terms, self, step)
            else:
                col = fn(logits, y)
                if col.shape != (logits.shape[0],):
                    raise ConfigError(
                        f"candidate loss {name!r} returned shape {tuple(col.shape)}; "
                        f"expected a per-example loss of shape ({logits.shape[0]},)"
                    )
            cols.append(col)
        return torch.stack(cols, dim=1)


def _check_params(
    focal_gamma: float, kl_eps: float, gce_q: float, tce_drop: float, tce_ramp_steps: int
) -> None:
    """ConfigError naming the ``loss.*`` key of the first bad hyper-parameter."""
    if not (math.isfinite(focal_gamma) and focal_gamma >= 0):
        raise ConfigError(f"focal_gamma must be >= 0, got {focal_gamma}")
    if not (0 <= kl_eps < 1):
        raise ConfigError(f"kl_eps must be in [0, 1), got {kl_eps}")
    if not (0 < gce_q <= 1):
        raise ConfigError(f"loss.gce_q must be in (0, 1], got {gce_q}")
    if not (0 <= tce_drop < 1):
        raise ConfigError(f"loss.tce_drop must be in [0, 1), got {tce_drop}")
    try:
        ramp: int | None = (
            None if isinstance(tce_ramp_steps, bool) else operator.index(tce_ramp_steps)
        )
    except TypeError:
        ramp = None
    if ramp is None or ramp < 1:
        raise ConfigError(f"loss.tce_ramp_steps must be an integer >= 1, got {tce_ramp_steps!r}")


def _parse_names(names: Sequence[str] | str) -> list[str]:
    if isinstance(names, str):
        parts = [p.strip() for p in names.split(",")]
        if names.strip() and any(not p for p in parts):
            raise ConfigError(f"empty name in candidate list {names!r}")
        parts = [p for p in parts if p]
    else:
        parts = list(names)
    if not parts:
        raise ConfigError("the candidate loss list is empty")
    seen: set[str] = set()
    for p in parts:
        if p in seen:
            raise ConfigError(f"candidate loss {p!r} is listed twice")
        seen.add(p)
    return parts


def candidate_losses(
    names: Sequence[str] | str,
    task: str,
    *,
    focal_gamma: float = DEFAULT_FOCAL_GAMMA,
    kl_eps: float = DEFAULT_KL_EPS,
    gce_q: float = DEFAULT_GCE_Q,
    tce_drop: float = DEFAULT_TCE_DROP,
    tce_ramp_steps: int = DEFAULT_TCE_RAMP_STEPS,
) -> CandidateSet:
    """Build the :class:`CandidateSet` for ``names`` (a list or ``"focal,kl,hinge,ce"``).

    Raises :class:`RegistryError` for an unknown name (listing the known ones) and
    :class:`ConfigError` for an empty or duplicated list, a bad task, a bad ``focal_gamma`` /
    ``kl_eps`` / ``gce_q`` (in (0, 1]) / ``tce_drop`` (in [0, 1)) / ``tce_ramp_steps`` (an
    integer >= 1), or a custom candidate without a multi-class function on a multi-class task.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected 'binary' or 'multiclass'")
    _check_params(focal_gamma, kl_eps, gce_q, tce_drop, tce_ramp_steps)
    cands = [get_candidate(n) for n in _parse_names(names)]
    for cand in cands:
        cand.fn(task)  # ConfigError when a custom candidate lacks the multi-class function
    return CandidateSet(
        cands,
        "binary" if task == "binary" else "multiclass",
        focal_gamma=focal_gamma,
        kl_eps=kl_eps,
        gce_q=gce_q,
        tce_drop=tce_drop,
        tce_ramp_steps=tce_ramp_steps,
    )


def example_ce(logits: Tensor, y: Tensor) -> Tensor:
    """Plain cross-entropy per example, as PyTorch computes it: BCE with logits (B,) or CE with
    logits (B, C) (``F.cross_entropy``'s own ``nll_loss`` of ``log_softmax``, the latter by
    :func:`~autoloss.ops.row_log_softmax`); shape (B,). The evaluation loss, and the
    loss history of a controller."""
    if logits.dim() == 1:
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")
    return F.nll_loss(row_log_softmax(logits), y.long(), reduction="none")


def evaluation_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The batch mean of :func:`example_ce`: what the validation logloss measures; shape ().

    PyTorch's fused mean reduction, whose value and gradient differ from ``example_ce(...).mean()``
    in the last bits: the recorded runs use this one."""
    if logits.dim() == 1:
        return F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype))
    return F.nll_loss(row_log_softmax(logits), y.long())


def weighted_loss(weights: Tensor, losses: Tensor) -> Tensor:
    """Training loss of a policy: mean over the batch of ``sum_k w_k * l_k``; (B, K) x2 -> ()."""
    return (weights * losses).sum(1).mean()
