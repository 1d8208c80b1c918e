"""Bi-level learning of a loss policy on validation batches (DARTS-style hypergradients).

A :class:`BilevelPolicy` owns parameters V (the AutoLoss controller, or DARTS's global logits) and a
differentiable weighting ``policy_weights(logits, y, step) -> (B, K)``. The recommender W trains on
the weighted training loss with the weights held constant; every ``update_every`` recommender
steps the trainer calls :meth:`BilevelPolicy.update` with a validation batch and V takes one Adam
step on

* ``first-order`` (ξ = 0): the weighted validation loss ``mean_b Σ_k p_k ℓ_k(W)``, W fixed;
* ``unrolled`` (ξ > 0): plain CE on the validation batch at ``W' = W - ξ ∇_W L_train(W, V)``
  (DARTS one-step), with ``∇_V`` computed either by central finite differences of
  ``∇_V L_train(W ± ε ∇_{W'} L_val, V)`` (DARTS eq. 7/8) or exactly by autograd through the
  virtual step (``torch.func.functional_call`` with ``create_graph``).

The recommender never changes during V's step: parameters perturbed in place are restored bit for
bit from saved copies, training-mode forwards save and restore every buffer (BatchNorm running
statistics), validation forwards run in eval mode, and all gradients are taken with
``torch.autograd.grad`` so no recommender ``.grad`` is written.

Sparse embedding tables (``nn.Embedding(sparse=True)``) are never copied densely by the
finite-difference path (it perturbs only the rows present in the sparse gradients); the exact
autograd path needs dense copies of each table per update (see :func:`_unrolled_autograd`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet, check_labels, evaluation_loss, weighted_loss
from autoloss.policies.base import GradSync, LossPolicy, Regularization, call_model, model_args

MODES = ("first-order", "unrolled")
UNROLLED_IMPLS = ("finite-difference", "autograd")
#: DARTS's finite-difference radius: ε = FD_RADIUS / ‖∇_{W'} L_val‖.
FD_RADIUS = 0.01

#: ``weigh(logits, y) -> (B, K)``: the policy's weights, differentiable in its parameters.
Weigh = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BilevelSchedule:
    """How a policy learns on validation batches: every ``update_every`` steps, one Adam step
    (``lr``) on the ``first-order`` or ``unrolled`` hypergradient (virtual step ``xi``)."""

    mode: str = "first-order"
    update_every: int = 7
    lr: float = 1e-3
    xi: float = 1e-3
    unrolled_impl: str = "finite-difference"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"loss.mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.unrolled_impl not in UNROLLED_IMPLS:
            raise ConfigError(
                f"loss.unrolled_impl {self.unrolled_impl!r}: expected one of "
                f"{', '.join(UNROLLED_IMPLS)}"
            )
        if self.mode == "unrolled" and not (self.xi > 0 and math.isfinite(self.xi)):
            raise ConfigError(f"loss.xi must be > 0 with mode unrolled, got {self.xi}")
        if self.update_every < 1:
            raise ConfigError(f"loss.update_every must be >= 1, got {self.update_every}")
        if not self.lr > 0:
            raise ConfigError(f"loss.controller_lr must be > 0, got {self.lr}")


@dataclass
class BilevelProblem:
    """What one validation update sees: the recommender, its candidate losses, a validation batch,
    the training batch of the step (unrolled mode) and the objective's regularisation."""

    model: nn.Module
    candidate_set: CandidateSet
    valid: tuple[Any, torch.Tensor]
    train: tuple[Any, torch.Tensor] | None = None
    regularization: Regularization | None = None
    train_rows: torch.Tensor | None = None
    valid_rows: torch.Tensor | None = None

    def train_loss(
        self, weigh: Weigh, params: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The recommender's training objective on the training batch for weighting ``weigh``
        (``params``: some parameters replaced, through ``functional_call``)."""
        if self.train is None:
            raise ValueError("the unrolled hypergradient needs the step's train_batch=(x, y)")
        x, y = self.train
        if params is None:
            logits = call_model(self.model, x)
        else:
            args, kwargs = model_args(x)
            logits = torch.func.functional_call(self.model, params, args, kwargs)
        losses = self.candidate_set(logits, y)
        obj = weighted_loss(weigh(logits, y), losses)
        return obj if self.regularization is None else obj + self.regularization(self.model)


# ---------------------------------------------------------------------------------------------
# Keeping the recommender unchanged


@contextmanager
def recommender_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Run ``model`` in train/eval mode; afterwards restore its mode and (if training) buffers.

    A training-mode forward updates BatchNorm running statistics; the controller's step must not.
    Every buffer is swapped for a copy for the duration (the forward updates the copy), and the
    originals are put back untouched: nothing the autograd graph saved is modified in place.
    """
    was = model.training
    swapped: list[tuple[dict[str, torch.Tensor | None], str, torch.Tensor]] = []
    if training:
        for mod in model.modules():
            for name, buf in mod._buffers.items():
                if buf is not None:
                    swapped.append((mod._buffers, name, buf))
        for bufs, name, buf in swapped:
            bufs[name] = buf.clone()
    model.train(training)
    try:
        yield
    finally:
        model.train(was)
        for bufs, name, buf in swapped:
            bufs[name] = buf


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class _Perturbation:
    """An in-place step ``W += a·d`` on some parameters that can be undone exactly.

    Dense directions save a copy of the parameter; sparse directions (row-sparse COO gradients of
    embedding tables) save only the rows they touch.
    """

    def __init__(self, params: Sequence[torch.Tensor], direction: Sequence[torch.Tensor | None]):
        self.items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        for p, d in zip(params, direction):
            if d is None:
                continue
            if d.is_sparse:
                d = d.coalesce()
                idx = d.indices()[0]
                self.items.append((p, d.values(), idx, p.detach().index_select(0, idx)))
            else:
                self.items.append((p, d, None, p.detach().clone()))

    @torch.no_grad()
    def apply(self, alpha: float) -> None:
        for p, d, idx, _ in self.items:
            if idx is None:
                p.add_(d, alpha=alpha)
            else:
                p.index_add_(0, idx, d * alpha)  # alpha=1: index_add_'s fast path

    @torch.no_grad()
    def restore(self) -> None:
        for p, _, idx, saved in self.items:
            if idx is None:
                p.copy_(saved)
            else:
                p.index_copy_(0, idx, saved)


def _norm(grads: Sequence[torch.Tensor | None]) -> float:
    total = 0.0
    for g in grads:
        if g is None:
            continue
        v = g.coalesce().values() if g.is_sparse else g
        total += float(v.double().pow(2).sum())
    return math.sqrt(total)


# ---------------------------------------------------------------------------------------------
# Hypergradients: each returns (objective value, gradients w.r.t. the policy parameters V)


def first_order(
    problem: BilevelProblem, weigh: Weigh, params: Sequence[nn.Parameter]
) -> tuple[float, list[torch.Tensor | None]]:
    """∇_V of the weighted validation loss ``mean_b Σ_k p_k ℓ_k(W)`` with W fixed.

    The recommender's validation logits come from an eval-mode forward (as at evaluation time),
    so they are constants: no recommender graph, no BatchNorm statistics touched.
    """
    x, y = problem.valid
    with recommender_mode(problem.model, False), torch.no_grad():
        logits = call_model(problem.model, x)
        losses = problem.candidate_set(logits, y)
    obj = weighted_loss(weigh(logits, y), losses)
    grads = torch.autograd.grad(obj, list(params), allow_unused=True)
    return float(obj.detach()), list(grads)


def unrolled(
    problem: BilevelProblem,
    weigh: Weigh,
    params: Sequence[nn.Parameter],
    xi: float,
    impl: str = "finite-difference",
) -> tuple[float, list[torch.Tensor | None]]:
    """∇_V of ``CE_val(W - ξ ∇_W L_train(W, V))``; ``impl`` is finite-difference or autograd.

    ``L_train`` is :meth:`BilevelProblem.train_loss` on the step's training batch (training mode,
    the recommender's own objective including regularisation) with weights ``weigh(ŷ(W), y)``: the
    controller input is taken at the current W and held there, matching the recommender step,
    where ŷ is detached.
    """
    _check_unshardable(problem.model)
    if impl == "autograd":
        return _unrolled_autograd(problem, weigh, params, xi)
    return _unrolled_finite_difference(problem, weigh, params, xi)


def _check_unshardable(model: nn.Module) -> None:
    """The virtual step moves every recommender parameter; a sharded table (TorchRec's, whose
    optimiser runs inside the backward pass: a module with a ``fused_optimizer``) gives autograd
    no gradient to step along, which would leave it silently out."""
    if any(hasattr(m, "fused_optimizer") for m in model.modules()):
        raise ConfigError(
            "the unrolled hypergradient takes a virtual step over every embedding table, which "
            "a sharded table does not allow: use mode='first-order'"
        )


def _unrolled_finite_difference(
    problem: BilevelProblem, weigh: Weigh, params: Sequence[nn.Parameter], xi: float
) -> tuple[float, list[torch.Tensor | None]]:
    model = problem.model
    vx, vy = problem.valid
    device = vy.device
    w_params = [p for p in model.parameters() if p.requires_grad]
    held: dict[str, torch.Tensor] = {}

    def weights_at_w(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        held["p"] = weigh(logits.detach(), y)  # attached to V; input fixed at W
        return held["p"].detach()

    # 1. g = ∇_W L_train(W, V) (p constant), then the virtual step W' = W - ξ g.
    rng_before = _rng_state(device)
    with recommender_mode(model, True):
        loss = problem.train_loss(weights_at_w)
        g = torch.autograd.grad(loss, w_params, allow_unused=True)
    rng_after = _rng_state(device)
    step = _Perturbation(w_params, g)
    step.apply(-xi)
    try:
        # 2. dw = ∇_{W'} CE_val(W').
        with recommender_mode(model, False):
            val = evaluation_loss(call_model(model, vx), vy)
            dw = torch.autograd.grad(val, w_params, allow_unused=True)
    finally:
        step.restore()
    norm = _norm(dw)
    if not (norm > 0 and math.isfinite(norm)):
        return float(val.detach()), [None] * len(params)
    eps = FD_RADIUS / norm

    # 3. ∇_V L_train(W ± ε dw, V), same dropout masks and controller sample as in step 1.
    p_attached = held["p"]
    sides = []
    for sign in (1.0, -1.0):
        pert = _Perturbation(w_params, dw)
        pert.apply(sign * eps)
        try:
            _set_rng_state(rng_before, device)
            with recommender_mode(model, True):
                sides.append(problem.train_loss(lambda logits, y: p_attached))
        finally:
            pert.restore()
    _set_rng_state(rng_after, device)
    grads = torch.autograd.grad(sides[0] - sides[1], list(params), allow_unused=True)
    scale = -xi / (2 * eps)
    return float(val.detach()), [None if gr is None else gr * scale for gr in grads]


def _sparse_table_names(model: nn.Module) -> set[str]:
    """Parameter names of the sparse embedding tables (``nn.Embedding/EmbeddingBag(sparse=True)``)."""
    names: set[str] = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding | nn.EmbeddingBag) and mod.sparse:
            names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


def _unrolled_autograd(
    problem: BilevelProblem, weigh: Weigh, params: Sequence[nn.Parameter], xi: float
) -> tuple[float, list[torch.Tensor | None]]:
    """Exact hypergradient: differentiate through the virtual step with ``create_graph``.

    Dense parameters are stepped as ``W' = W - ξ g`` and passed to the validation forward with
    ``torch.func.functional_call``. A sparse table's gradient is a sparse tensor whose
    double-backward PyTorch supports only through a dense operand, so for the duration of the update
    each table is seen as ``W.detach() + Δ`` with a zero leaf Δ (the gradient w.r.t. Δ is the
    table's gradient, with graph) and ``W' = W.detach() - ξ·dense(g_Δ)``: two dense copies of each
    table per update. Exact for any model, but for million-row tables use finite differences.
    """
    model = problem.model
    vx, vy = problem.valid
    tables = _sparse_table_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    deltas = {n: torch.zeros_like(p, requires_grad=True) for n, p in named if n in tables}
    leaves = [deltas.get(n, p) for n, p in named]
    seen = {n: p.detach() + deltas[n] for n, p in named if n in deltas}

    with recommender_mode(model, True):
        loss = problem.train_loss(lambda logits, y: weigh(logits.detach(), y), seen)
        g = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    stepped: dict[str, torch.Tensor] = {}
    for (n, p), gr in zip(named, g):
        base = p.detach() if n in deltas else p
        if gr is None:
            stepped[n] = base
        else:
            stepped[n] = base - xi * (gr.to_dense() if gr.is_sparse else gr)
    args, kwargs = model_args(vx)
    with recommender_mode(model, False):
        logits = torch.func.functional_call(model, stepped, args, kwargs)
        val = evaluation_loss(logits, vy)
    try:
        grads = torch.autograd.grad(val, list(params), allow_unused=True)
    except RuntimeError as exc:
        if "not implemented" not in str(exc):
            raise
        raise ConfigError(  # e.g. multi_margin_loss (multi-class hinge) has no double backward
            "loss.unrolled_impl=autograd needs twice-differentiable candidate losses and model "
            f"({str(exc).splitlines()[0]}); use unrolled_impl=finite-difference"
        ) from None
    return float(val.detach()), list(grads)


# ---------------------------------------------------------------------------------------------
# The policy base


class PolicyOptimizer:
    """Adam over a policy's parameters, created on first use.

    Its state travels in the policy's ``state_dict`` (``get_extra_state``), so a resumed run
    continues with the same moments.
    """

    def __init__(self, params: Callable[[], list[nn.Parameter]], lr: float) -> None:
        self._params = params
        self.lr = lr
        self._opt: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None
        #: called on the parameters before each step (a distributed run's gradient average)
        self.sync: GradSync | None = None

    def get(self) -> torch.optim.Optimizer:
        if self._opt is None:
            params = self._params()
            # one fused kernel on the CPU and CUDA (docs/benchmarks.md, "Kernels")
            fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
            self._opt = torch.optim.Adam(params, lr=self.lr, fused=fused)
            if self._pending is not None:
                self._opt.load_state_dict(self._pending)
                self._pending = None
        return self._opt

    def step(self, grads: Sequence[torch.Tensor | None] | None = None) -> None:
        """One Adam step; with ``grads`` these replace the parameters' ``.grad`` first."""
        opt = self.get()
        if grads is not None:
            for p, g in zip(self._params(), grads):
                p.grad = None if g is None else g.detach()
        if self.sync is not None:
            self.sync(self._params())
        opt.step()
        opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any] | None:
        return self._opt.state_dict() if self._opt is not None else self._pending

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self._opt = None
        self._pending = state


class BilevelPolicy(LossPolicy):
    """A loss policy whose parameters learn on validation batches every ``update_every`` steps.

    Subclasses implement :meth:`policy_weights` (differentiable in the policy's parameters) and
    list their trainable parameters in :meth:`hyper_parameters`. During the recommender's step the
    weights are computed without gradient (constants); the validation step is :meth:`update`.
    """

    uses_validation = True

    def __init__(self, candidate_set: CandidateSet, schedule: BilevelSchedule) -> None:
        super().__init__(candidate_set)
        self.schedule = schedule
        self.update_every = schedule.update_every
        self.updates = 0
        self.policy_optimizer = PolicyOptimizer(self.hyper_parameters, float(schedule.lr))
        self._objectives: list[float] = []

    # -- to implement
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
        """(B, K) weights from detached logits, differentiable w.r.t. the policy's parameters.

        ``own_step`` is True inside the policy's validation step (a controller may update its
        BatchNorm statistics there) and False during the recommender's step. ``rows`` and
        ``split`` locate the batch for per-example memories.
        """
        raise NotImplementedError

    def remember(
        self, split: str, rows: torch.Tensor | None, logits: torch.Tensor, y: torch.Tensor
    ) -> None:
        """Note a validation visit for a per-example memory (no-op by default)."""

    def hyper_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- the recommender's step
    def weights(
        self, logits: torch.Tensor, y: torch.Tensor, losses: torch.Tensor, step: int
    ) -> torch.Tensor:
        with torch.no_grad():
            return self.policy_weights(logits.detach(), y, step, rows=self._step_rows)

    # -- the policy's step
    def hypergradient(self, problem: BilevelProblem) -> tuple[float, list[torch.Tensor | None]]:
        """(validation objective, ∇_V) for the configured mode, without stepping anything."""
        params = self.hyper_parameters()
        step = self.num_steps

        def weigh_train(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            rows = problem.train_rows
            return self.policy_weights(logits.detach(), y, step, own_step=True, rows=rows)

        def weigh_valid(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            rows = problem.valid_rows
            w = self.policy_weights(
                logits.detach(), y, step, own_step=True, rows=rows, split="valid"
            )
            self.remember("valid", rows, logits, y)
            return w

        sch = self.schedule
        if sch.mode == "first-order":
            return first_order(problem, weigh_valid, params)
        return unrolled(problem, weigh_train, params, sch.xi, sch.unrolled_impl)

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
        """One Adam step of the policy on the validation batch ``(x_valid, y_valid)``.

        ``model`` is the recommender (``model(x_valid)`` gives logits); it is left exactly as it
        was: parameters, buffers and ``.grad``. ``train_batch`` (the step's ``(x, y)``) is needed
        by the unrolled mode; ``regularization(model)`` is added to its training objective.
        """
        if self.update_every <= 0:
            return {}
        if model is None or y_valid is None:
            raise ValueError(f"{self.name}.update needs the model and a validation batch")
        check_labels(y_valid, self.task, getattr(self, "num_classes", None), name="y_valid")
        train, train_rows = None, None
        if train_batch is not None:
            train = (train_batch[0], train_batch[1])
            train_rows = train_batch[2] if len(train_batch) > 2 else None
        problem = BilevelProblem(
            model, self.candidate_set, (x_valid, y_valid), train, regularization, train_rows,
            valid_rows,
        )  # fmt: skip
        obj, grads = self.hypergradient(problem)
        self.policy_optimizer.step(grads)
        self.updates += 1
        self._objectives.append(obj)
        return {"controller_objective": obj}

    def stats(self) -> dict[str, float]:
        out = super().stats()
        if self._objectives:
            out["controller_objective_avg"] = sum(self._objectives) / len(self._objectives)
            self._objectives = []
        out["controller_updates"] = float(self.updates)
        return out

    def describe(self) -> dict[str, Any]:
        sch = self.schedule
        out: dict[str, Any] = {"mode": sch.mode, "update_every": self.update_every}
        if sch.mode == "unrolled":
            out.update(xi=sch.xi, unrolled_impl=sch.unrolled_impl)
        return out

    # -- resume: the policy's optimizer state travels in the trainer's checkpoint
    def get_extra_state(self) -> dict[str, Any]:
        return {
            **super().get_extra_state(),
            "optimizer": self.policy_optimizer.state_dict(),
            "updates": self.updates,
            "objectives": list(self._objectives),  # since the last log line
        }

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        if isinstance(state, dict):
            self.updates = int(state.get("updates", 0))
            self.policy_optimizer.load_state_dict(state.get("optimizer"))
            self._objectives = [float(v) for v in state.get("objectives", [])]
