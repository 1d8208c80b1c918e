"""Bi-level gradients: each step updates only what it should; hypergradients match the objective."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from policy_testkit import (
    TinyRecommender,
    assert_same_state,
    batch,
    candidates,
    context,
    loss_cfg,
    state_copy,
)
from torch import nn

from autoloss.data.spec import Batch, FeatureSpec
from autoloss.models import build_model
from autoloss.policies.base import PolicyInput
from autoloss.policies.controller import AutoLossPolicy
from autoloss.policies.darts import DartsWeights

MODES = [
    ("first-order", "finite-difference"),
    ("unrolled", "finite-difference"),
    ("unrolled", "autograd"),
]


def recommender_step(model: TinyRecommender, policy: AutoLossPolicy, step: int) -> torch.Tensor:
    cands = policy.candidates
    b = batch(64, seed=100 + step)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    logits = model(*b.inputs())
    losses = cands(logits, b.y)
    w = policy.weights(PolicyInput(logits, b.y, losses, step))
    loss = (w * losses).sum(1).mean()
    opt.zero_grad()
    policy.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    policy.after_backward(step)
    return w


def test_recommender_step_leaves_controller_unchanged() -> None:
    torch.manual_seed(0)
    model, policy = TinyRecommender(), AutoLossPolicy(candidates(), loss_cfg(), "binary")
    before_model = state_copy(model)
    before_ctrl = state_copy(policy)
    w = recommender_step(model, policy, step=3)
    assert not w.requires_grad  # the controller's output is a constant for the recommender
    assert_same_state(policy, before_ctrl)  # parameters and BatchNorm statistics
    assert all(p.grad is None for p in policy.parameters())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before_model[k])]
    assert "fc.weight" in changed and "embedding.weight" in changed


@pytest.mark.parametrize(("mode", "impl"), MODES)
def test_controller_step_leaves_recommender_unchanged(mode: str, impl: str) -> None:
    torch.manual_seed(0)
    model = TinyRecommender()
    policy = AutoLossPolicy(
        candidates(), loss_cfg(mode=mode, unrolled_impl=impl, xi=0.05), "binary"
    )
    recommender_step(model, policy, step=0)  # the trainer calls update after a step
    model.zero_grad(set_to_none=True)
    model.train()
    before_model = state_copy(model)  # includes BatchNorm running stats and num_batches_tracked
    before_ctrl = {k: v.clone() for k, v in policy.named_parameters()}
    out = policy.update(context(model, policy.candidates, batch(64, seed=1), batch(64, seed=2)))
    assert_same_state(model, before_model)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # mode restored
    assert out["controller_objective"] > 0
    moved = [k for k, p in policy.named_parameters() if not torch.equal(p, before_ctrl[k])]
    assert "controller.head.weight" in moved and "controller.linears.0.weight" in moved


def _true_unrolled_objective(
    policy: AutoLossPolicy, model: nn.Module, tb: Batch, vb: Batch, xi: float, step: int
) -> torch.Tensor:
    """CE_val(W - ξ ∇_W L_train(W, V)), written out directly (dense copies; tiny model)."""
    m_train = copy.deepcopy(model).train()
    logits = m_train(tb.x)
    losses = policy.candidates(logits, tb.y)
    p = policy.policy_weights(logits.detach(), tb.y, step, own_step=True)
    loss = (p * losses).sum(1).mean()
    params = list(m_train.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    m_val = copy.deepcopy(model)  # original buffers: the virtual step changes parameters only
    with torch.no_grad():
        for q, g in zip(m_val.parameters(), grads):
            if g is not None:
                q.sub_(xi * (g.to_dense() if g.is_sparse else g))
    m_val.eval()
    return F.binary_cross_entropy_with_logits(m_val(vb.x), vb.y.double()).detach()


def _model(kind: str) -> nn.Module:
    if kind == "tiny":  # nn.Embedding(sparse=True) called as a module, padding row, BatchNorm
        model: nn.Module = TinyRecommender().double()
        with torch.no_grad():  # a non-trivial BatchNorm state and embedding scale
            model.bn.running_mean.uniform_(-0.5, 0.5)
            model.embedding.weight.mul_(3)
            model.embedding.weight[model.pad].zero_()
        return model
    # the real DeepFM: shared sparse table with its own unique-row lookup, FM, MLP with BatchNorm
    spec = FeatureSpec(cat_names=("a", "b"), cat_vocab=(31, 31))
    model = build_model("deepfm", spec, embed_dim=4, mlp=(8,), dropout=0.0).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize(
    ("impl", "kind"),
    [
        ("finite-difference", "tiny"),
        ("autograd", "tiny"),
        ("finite-difference", "deepfm"),
        ("autograd", "deepfm"),
    ],
)
def test_unrolled_hypergradient_matches_finite_difference_of_true_objective(
    impl: str, kind: str
) -> None:
    torch.manual_seed(0)
    xi, step = 0.1, 50
    model = _model(kind)
    policy = AutoLossPolicy(
        candidates(),
        loss_cfg(mode="unrolled", unrolled_impl=impl, xi=xi, controller_dropout=0.0),
        "binary",
    ).double()
    tb, vb = batch(48, seed=1), batch(40, seed=2)
    noise = -torch.log(-torch.log(torch.rand(48, 4, dtype=torch.float64)))
    policy.gumbel_noise = lambda la: noise  # type: ignore[method-assign]
    ctx = context(model, policy.candidates, tb, vb, step=step)

    obj, grads = policy.hypergradient(ctx)
    assert obj == pytest.approx(
        float(_true_unrolled_objective(policy, model, tb, vb, xi, step)), rel=1e-9
    )
    params = dict(policy.named_parameters())
    checks = [
        ("controller.head.weight", (0, 0)),
        ("controller.head.weight", (3, 5)),
        ("controller.head.bias", (1,)),
        ("controller.linears.0.weight", (2, 1)),
        ("controller.linears.1.weight", (4, 7)),
        ("controller.norms.0.weight", (3,)),
    ]
    names = [n for n, _ in policy.named_parameters()]
    h = 1e-6
    for name, idx in checks:
        p = params[name]
        with torch.no_grad():
            p[idx] += h
        f_plus = float(_true_unrolled_objective(policy, model, tb, vb, xi, step))
        with torch.no_grad():
            p[idx] -= 2 * h
        f_minus = float(_true_unrolled_objective(policy, model, tb, vb, xi, step))
        with torch.no_grad():
            p[idx] += h
        numeric = (f_plus - f_minus) / (2 * h)
        got = grads[names.index(name)]
        assert got is not None
        analytic = float(got[idx])
        rel = 1e-3 if impl == "finite-difference" else 1e-6
        assert analytic == pytest.approx(numeric, rel=rel, abs=1e-9), name
        assert abs(numeric) > 1e-7, f"{name}: uninformative check"


def test_first_order_hypergradient_is_gradient_of_weighted_validation_loss() -> None:
    torch.manual_seed(0)
    model = TinyRecommender().double()
    policy = AutoLossPolicy(candidates(), loss_cfg(controller_dropout=0.0), "binary").double()
    vb = batch(40, seed=2)
    noise = -torch.log(-torch.log(torch.rand(40, 4, dtype=torch.float64)))
    policy.gumbel_noise = lambda la: noise  # type: ignore[method-assign]
    obj, grads = policy.hypergradient(
        context(model, policy.candidates, batch(40, seed=1), vb, step=9)
    )

    def objective() -> torch.Tensor:
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            logits = m(vb.x)
            p = policy.policy_weights(logits, vb.y, 9, own_step=True)
            return (p * policy.candidates(logits, vb.y)).sum(1).mean()

    assert obj == pytest.approx(float(objective()), rel=1e-12)
    p = policy.controller.head.bias
    h = 1e-6
    with torch.no_grad():
        p[2] += h
    f_plus = float(objective())
    with torch.no_grad():
        p[2] -= 2 * h
    f_minus = float(objective())
    names = [n for n, _ in policy.named_parameters()]
    got = grads[names.index("controller.head.bias")]
    assert got is not None
    assert float(got[2]) == pytest.approx((f_plus - f_minus) / (2 * h), rel=1e-6)


@pytest.mark.parametrize("mode", ["first-order", "unrolled"])
def test_darts_weights_learn_and_stay_on_simplex(mode: str) -> None:
    torch.manual_seed(0)
    model = TinyRecommender()
    policy = DartsWeights(candidates(), loss_cfg(mode=mode, xi=0.05, controller_lr=0.05))
    before_model = state_copy(model)
    for i in range(5):
        policy.update(
            context(model, policy.candidates, batch(64, seed=10 + i), batch(64, seed=20 + i))
        )
    assert_same_state(model, before_model)
    w = policy.global_weights()
    assert float(w.sum().detach()) == pytest.approx(1.0, abs=1e-6)
    assert bool((w >= 0).all())
    assert not torch.allclose(w, torch.full((4,), 0.25), atol=1e-3)
    inp = PolicyInput(torch.zeros(3), torch.tensor([0, 1, 1]), torch.zeros(3, 4), 0)
    assert torch.allclose(policy.weights(inp), w.detach().expand(3, -1))
    assert set(policy.describe()["weights"]) == {"focal", "kl", "hinge", "ce"}
