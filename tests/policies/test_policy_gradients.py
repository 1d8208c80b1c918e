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
    fix_noise,
    gumbel_noise,
    problem,
    state_copy,
)
from torch import nn

from autoloss.data.spec import Batch, FeatureSpec
from autoloss.errors import ConfigError
from autoloss.losses import weighted_loss
from autoloss.models import build_model
from autoloss.policies.autoloss import AutoLoss
from autoloss.policies.bilevel import BilevelProblem, first_order, unrolled
from autoloss.policies.darts import DARTSLoss
from autoloss.train.trainer import model_regularization

MODES = [
    ("first-order", "finite-difference"),
    ("unrolled", "finite-difference"),
    ("unrolled", "autograd"),
]


def autoloss(**kw: object) -> AutoLoss:
    return AutoLoss("binary", hidden=(16, 16), **kw)  # type: ignore[arg-type]


def recommender_step(model: TinyRecommender, policy: AutoLoss, seed: int) -> torch.Tensor:
    """One training step with the policy as the criterion; returns the loss."""
    b = batch(64, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = policy(model(*b.inputs()), b.y)
    opt.zero_grad()
    policy.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def test_recommender_step_leaves_controller_unchanged() -> None:
    torch.manual_seed(0)
    model, policy = TinyRecommender(), autoloss()
    before_model = state_copy(model)
    before_ctrl = state_copy(policy)
    b = batch(64, seed=5)
    logits = model(*b.inputs())
    w = policy.weights(logits, b.y, policy.candidate_set(logits, b.y), 3)
    assert not w.requires_grad  # the controller's output is a constant for the recommender
    recommender_step(model, policy, seed=103)
    assert policy.num_steps == 1
    assert_same_state(policy, before_ctrl)  # parameters and BatchNorm statistics
    assert all(p.grad is None for p in policy.parameters())
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before_model[k])]
    assert "fc.weight" in changed and "embedding.weight" in changed


@pytest.mark.parametrize(("mode", "impl"), MODES)
def test_controller_step_leaves_recommender_unchanged(mode: str, impl: str) -> None:
    torch.manual_seed(0)
    model = TinyRecommender()
    policy = autoloss(mode=mode, unrolled_impl=impl, xi=0.05)
    recommender_step(model, policy, seed=100)  # the trainer calls update after a step
    model.zero_grad(set_to_none=True)
    model.train()
    before_model = state_copy(model)  # includes BatchNorm running stats and num_batches_tracked
    before_ctrl = {k: v.clone() for k, v in policy.named_parameters()}
    tb, vb = batch(64, seed=1), batch(64, seed=2)
    out = policy.update(
        model,
        vb.inputs(),
        vb.y,
        train_batch=(tb.inputs(), tb.y),
        regularization=lambda m: 1e-3 * m.fc.weight.pow(2).sum(),
    )
    assert_same_state(model, before_model)
    assert all(p.grad is None for p in model.parameters())
    assert model.training  # mode restored
    assert set(out) == {"controller_objective"} and out["controller_objective"] > 0
    assert policy.updates == 1 and policy.stats()["controller_updates"] == 1.0
    moved = [k for k, p in policy.named_parameters() if not torch.equal(p, before_ctrl[k])]
    assert "selector.network.head.weight" in moved
    assert "selector.network.linears.0.weight" in moved
    assert all(p.grad is None for p in policy.parameters())  # the policy's optimiser cleaned up


def test_unrolled_update_needs_the_train_batch() -> None:
    model, policy = TinyRecommender(), autoloss(mode="unrolled")
    vb = batch(16, seed=2)
    with pytest.raises(ValueError, match="train_batch"):
        policy.update(model, vb.inputs(), vb.y)
    with pytest.raises(ValueError, match="validation batch"):
        policy.update(model, vb.inputs(), None)


def test_model_input_may_be_a_tensor_a_tuple_or_a_dict() -> None:
    torch.manual_seed(0)
    model = TinyRecommender().double()
    policy = autoloss(mode="unrolled", xi=0.1, dropout=0.0).double()
    tb, vb = batch(32, seed=1), batch(32, seed=2)
    fix_noise(policy, gumbel_noise(32, 4, dtype=torch.float64))
    out = []
    for make in (lambda b: b.x, lambda b: (b.x,), Batch.inputs, lambda b: {"x": b.x}):
        pb = BilevelProblem(model, policy.candidate_set, (make(vb), vb.y), (make(tb), tb.y))
        out.append(policy.hypergradient(pb))
    for obj, grads in out[1:]:
        assert obj == out[0][0]
        assert all(torch.equal(a, b) for a, b in zip(grads, out[0][1]))  # type: ignore[arg-type]


def test_train_loss_is_the_recommenders_objective() -> None:
    torch.manual_seed(0)
    model = TinyRecommender().double().eval()
    cands, tb = candidates(), batch(32, seed=1)
    w = torch.rand(32, 4, dtype=torch.float64)
    pb = BilevelProblem(model, cands, valid=(tb.inputs(), tb.y), train=(tb.inputs(), tb.y))
    before = state_copy(model)
    with torch.no_grad():
        logits = model(*tb.inputs())
        assert torch.equal(pb.train_loss(lambda s, y: w), weighted_loss(w, cands(logits, tb.y)))
        expected = float((w * cands(logits, tb.y)).sum(1).mean())
        pb.regularization = lambda m: torch.tensor(0.5, dtype=torch.float64)
        assert float(pb.train_loss(lambda s, y: w)) == pytest.approx(expected + 0.5, rel=1e-12)
        # some parameters replaced (functional_call): the logits move by 1, the model does not
        shifted = float((w * cands(logits + 1.0, tb.y)).sum(1).mean()) + 0.5
        params = {"out.bias": model.out.bias + 1.0}
        assert float(pb.train_loss(lambda s, y: w, params)) == pytest.approx(shifted, rel=1e-12)
    assert_same_state(model, before)


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy, dropping the embedding penalties a training forward left on the model."""
    for m in model.modules():
        if getattr(m, "penalty", None) is not None:
            m.penalty = None
    return copy.deepcopy(model)


def _true_unrolled_objective(
    policy: AutoLoss, model: nn.Module, tb: Batch, vb: Batch, xi: float, step: int
) -> torch.Tensor:
    """CE_val(W - ξ ∇_W L_train(W, V)), written out directly (dense copies; tiny model)."""
    m_train = _copy(model).train()
    logits = m_train(tb.x)
    losses = policy.candidate_set(logits, tb.y)
    p = policy.policy_weights(logits.detach(), tb.y, step, own_step=True)
    loss = (p * losses).sum(1).mean() + model_regularization(m_train)
    params = list(m_train.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    m_val = _copy(model)  # original buffers: the virtual step changes parameters only
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
    model = build_model("deepfm", spec, embed_dim=4, mlp=(8,), dropout=0.0, embedding_l2=0.1)
    model = model.double()
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
    policy = autoloss(mode="unrolled", unrolled_impl=impl, xi=xi, dropout=0.0).double()
    policy.num_steps = step  # τ(50)
    tb, vb = batch(48, seed=1), batch(40, seed=2)
    fix_noise(policy, gumbel_noise(48, 4, dtype=torch.float64))
    pb = problem(model, policy.candidate_set, tb, vb)
    pb.regularization = model_regularization  # DeepFM's embedding L2 (0 for the tiny model)

    obj, grads = policy.hypergradient(pb)
    assert obj == pytest.approx(
        float(_true_unrolled_objective(policy, model, tb, vb, xi, step)), rel=1e-9
    )
    # the free function computes the same with the policy's weighting
    weigh = lambda s, y: policy.policy_weights(s.detach(), y, step, own_step=True)  # noqa: E731
    obj2, grads2 = unrolled(pb, weigh, policy.hyper_parameters(), xi, impl)
    assert obj2 == obj
    assert all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(grads, grads2))  # type: ignore[arg-type]
    params = dict(policy.named_parameters())
    checks = [
        ("selector.network.head.weight", (0, 0)),
        ("selector.network.head.weight", (3, 5)),
        ("selector.network.head.bias", (1,)),
        ("selector.network.linears.0.weight", (2, 1)),
        ("selector.network.linears.1.weight", (4, 7)),
        ("selector.network.norms.0.weight", (3,)),
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


def test_multiclass_unrolled_implementations_agree() -> None:
    model = TinyRecommender(num_classes=5).double()
    tb, vb = batch(48, seed=1, num_classes=5), batch(40, seed=2, num_classes=5)
    noise = gumbel_noise(48, 3, dtype=torch.float64)
    out = []
    for impl in ("finite-difference", "autograd"):
        torch.manual_seed(1)
        policy = AutoLoss(
            "multiclass",
            5,
            candidates="ce,focal,kl",
            hidden=(16,),
            mode="unrolled",
            unrolled_impl=impl,
            xi=0.1,
            dropout=0.0,
        ).double()
        fix_noise(policy, noise)
        before = state_copy(model)
        out.append(policy.hypergradient(problem(model, policy.candidate_set, tb, vb)))
        assert_same_state(model, before)
    (obj_fd, g_fd), (obj_ag, g_ag) = out
    assert obj_fd == obj_ag
    scale = max(float(b.abs().max()) for b in g_ag if b is not None)
    for a, b in zip(g_fd, g_ag):
        assert a is not None and b is not None
        assert torch.allclose(a, b, rtol=5e-3, atol=1e-3 * scale)
    # multi-class hinge (multi_margin_loss) has no double backward: a clear error
    policy = AutoLoss("multiclass", 5, hidden=(16,), mode="unrolled", unrolled_impl="autograd")
    with pytest.raises(ConfigError, match="use unrolled_impl=finite-difference"):
        policy.double().hypergradient(problem(model, policy.candidate_set, tb, vb))


def test_first_order_hypergradient_is_gradient_of_weighted_validation_loss() -> None:
    torch.manual_seed(0)
    model = TinyRecommender().double()
    policy = autoloss(dropout=0.0).double()
    policy.num_steps = 9
    vb = batch(40, seed=2)
    fix_noise(policy, gumbel_noise(40, 4, dtype=torch.float64))
    obj, grads = policy.hypergradient(problem(model, policy.candidate_set, batch(40, seed=1), vb))

    def objective() -> torch.Tensor:
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            logits = m(vb.x)
            p = policy.policy_weights(logits, vb.y, 9, own_step=True)
            return (p * policy.candidate_set(logits, vb.y)).sum(1).mean()

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
    got = grads[names.index("selector.network.head.bias")]
    assert got is not None
    assert float(got[2]) == pytest.approx((f_plus - f_minus) / (2 * h), rel=1e-6)


def test_first_order_gradient_of_global_weights_matches_softmax_formula() -> None:
    """d/dβ Σ_k softmax(β)_k L_k = p ⊙ (L - p·L), L_k the mean validation loss of candidate k."""
    torch.manual_seed(0)
    model = TinyRecommender().double().eval()
    policy = DARTSLoss("binary").double()
    with torch.no_grad():
        policy.beta.copy_(torch.tensor([0.3, -0.2, 0.5, 0.0]))
    vb = batch(40, seed=2)
    pb = problem(model, policy.candidate_set, batch(40, seed=1), vb)
    before = state_copy(model)
    obj, (g,) = first_order(pb, lambda s, y: policy.policy_weights(s, y, 0), [policy.beta])
    with torch.no_grad():
        L = policy.candidate_set(model(vb.x), vb.y).mean(0)
    p = torch.softmax(policy.beta.detach(), 0)
    assert obj == pytest.approx(float(p @ L), rel=1e-12)
    assert g is not None and torch.allclose(g, p * (L - p @ L), rtol=1e-10)
    assert_same_state(model, before)


@pytest.mark.parametrize("mode", ["first-order", "unrolled"])
def test_darts_weights_learn_and_stay_on_simplex(mode: str) -> None:
    torch.manual_seed(0)
    model = TinyRecommender()
    policy = DARTSLoss("binary", mode=mode, xi=0.05, controller_lr=0.05)
    assert policy.uses_validation and policy.should_update(6) and not policy.should_update(7)
    before_model = state_copy(model)
    for i in range(5):
        tb, vb = batch(64, seed=10 + i), batch(64, seed=20 + i)
        policy.update(model, vb.inputs(), vb.y, train_batch=(tb.inputs(), tb.y))
    assert_same_state(model, before_model)
    w = policy.global_weights()
    assert float(w.sum().detach()) == pytest.approx(1.0, abs=1e-6)
    assert bool((w >= 0).all())
    assert not torch.allclose(w, torch.full((4,), 0.25), atol=1e-3)
    logits, y = torch.zeros(3), torch.tensor([0, 1, 1])
    assert torch.allclose(policy.probabilities(logits, y), w.detach().expand(3, -1))
    assert float(policy(logits, y)) == pytest.approx(
        float((policy.candidate_set(logits, y) @ w.detach()).mean()), rel=1e-6
    )
    desc = policy.describe()
    assert set(desc["weights"]) == {"focal", "kl", "hinge", "ce"} and desc["updates"] == 5
