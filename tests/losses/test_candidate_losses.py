"""Candidate losses against hand-written closed forms, gradients, and extreme logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoloss.losses import (
    DEFAULT_CANDIDATES,
    binary_ce,
    binary_focal,
    binary_kl,
    candidate_losses,
    multiclass_ce,
    multiclass_kl,
    weighted_loss,
)

ALL = ("ce", "focal", "kl", "hinge", "mse")
EPS = 0.1


def _sig(s: float) -> float:
    return 1 / (1 + math.exp(-s))


def _binary_reference(name: str, s: float, y: int, gamma: float = 2.0, eps: float = EPS) -> float:
    """The binary candidate formulas of docs/losses.md ("Definitions"), in plain Python."""
    p = _sig(s)
    pt = p if y == 1 else 1 - p
    t = 2 * y - 1
    if name == "ce":
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))
    if name == "focal":
        return -((1 - pt) ** gamma) * math.log(pt)
    if name == "kl":
        q1 = y * (1 - eps) + eps / 2
        q0 = 1 - q1
        return sum(q * (math.log(q) - math.log(pc)) for q, pc in ((q1, p), (q0, 1 - p)) if q > 0)
    if name == "hinge":
        return max(0.0, 1 - t * s)
    if name == "mse":
        return (p - y) ** 2
    raise AssertionError(name)


def _multiclass_reference(
    name: str, s: list[float], y: int, gamma: float = 2.0, eps: float = EPS
) -> float:
    c = len(s)
    m = max(s)
    z = sum(math.exp(v - m) for v in s)
    p = [math.exp(v - m) / z for v in s]
    onehot = [1.0 if k == y else 0.0 for k in range(c)]
    if name == "ce":
        return -math.log(p[y])
    if name == "focal":
        return -((1 - p[y]) ** gamma) * math.log(p[y])
    if name == "kl":
        q = [o * (1 - eps) + eps / c for o in onehot]
        return sum(qk * (math.log(qk) - math.log(pk)) for qk, pk in zip(q, p) if qk > 0)
    if name == "hinge":
        return sum(max(0.0, 1 - s[y] + s[k]) for k in range(c) if k != y) / c
    if name == "mse":
        return sum((pk - ok) ** 2 for pk, ok in zip(p, onehot))
    raise AssertionError(name)


BIN_S = [-3.0, -0.7, 0.0, 0.4, 2.5, -1.2, 0.9, 3.3]
BIN_Y = [0, 1, 0, 1, 1, 0, 0, 1]
MC_S = [[0.2, -1.0, 2.0], [1.5, 0.3, -0.4], [-2.0, -2.0, 1.0], [0.0, 0.0, 0.0], [3.0, -1.0, 0.5]]
MC_Y = [2, 0, 1, 1, 0]


@pytest.mark.parametrize("y_dtype", [torch.int64, torch.float32])
def test_binary_candidates_match_closed_form(y_dtype: torch.dtype) -> None:
    cs = candidate_losses(ALL, "binary")
    out = cs(torch.tensor(BIN_S, dtype=torch.float64), torch.tensor(BIN_Y, dtype=y_dtype))
    assert out.shape == (len(BIN_S), len(ALL))
    assert out.dtype == torch.float64
    for k, name in enumerate(ALL):
        ref = [_binary_reference(name, s, y) for s, y in zip(BIN_S, BIN_Y)]
        torch.testing.assert_close(out[:, k], torch.tensor(ref, dtype=torch.float64))


def test_multiclass_candidates_match_closed_form() -> None:
    cs = candidate_losses(ALL, "multiclass")
    out = cs(torch.tensor(MC_S, dtype=torch.float64), torch.tensor(MC_Y))
    assert out.shape == (len(MC_S), len(ALL))
    for k, name in enumerate(ALL):
        ref = [_multiclass_reference(name, s, y) for s, y in zip(MC_S, MC_Y)]
        torch.testing.assert_close(out[:, k], torch.tensor(ref, dtype=torch.float64))


def test_match_torch_reference_losses() -> None:
    s = torch.tensor(BIN_S)
    y = torch.tensor(BIN_Y, dtype=torch.float32)
    cs = candidate_losses("ce,hinge", "binary")
    torch.testing.assert_close(
        cs(s, y)[:, 0], F.binary_cross_entropy_with_logits(s, y, reduction="none")
    )
    sm = torch.tensor(MC_S)
    ym = torch.tensor(MC_Y)
    cm = candidate_losses("ce,hinge", "multiclass")
    out = cm(sm, ym)
    torch.testing.assert_close(out[:, 0], F.cross_entropy(sm, ym, reduction="none"))
    torch.testing.assert_close(out[:, 1], F.multi_margin_loss(sm, ym, reduction="none"))


def test_hyperparameters_and_standalone_functions_agree() -> None:
    s = torch.tensor(BIN_S, dtype=torch.float64)
    y = torch.tensor(BIN_Y)
    cs = candidate_losses("focal,kl", "binary", focal_gamma=0.5, kl_eps=0.3)
    out = cs(s, y)
    torch.testing.assert_close(out[:, 0], binary_focal(s, y, gamma=0.5))
    torch.testing.assert_close(out[:, 1], binary_kl(s, y, eps=0.3))
    ref = [_binary_reference("focal", a, b, gamma=0.5) for a, b in zip(BIN_S, BIN_Y)]
    torch.testing.assert_close(out[:, 0], torch.tensor(ref, dtype=torch.float64))
    # gamma = 0 is plain cross-entropy
    torch.testing.assert_close(binary_focal(s, y, gamma=0.0), binary_ce(s, y))


def test_kl_with_hard_labels_equals_ce() -> None:
    s = torch.tensor(BIN_S, dtype=torch.float64)
    y = torch.tensor(BIN_Y)
    torch.testing.assert_close(binary_kl(s, y, eps=0.0), binary_ce(s, y))
    sm = torch.tensor(MC_S, dtype=torch.float64)
    ym = torch.tensor(MC_Y)
    torch.testing.assert_close(multiclass_kl(sm, ym, eps=0.0), multiclass_ce(sm, ym))
    cs = candidate_losses("kl,ce", "multiclass", kl_eps=0.0)
    out = cs(sm, ym)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    # with smoothing it is a different loss, and KL >= 0
    assert not torch.allclose(binary_kl(s, y), binary_ce(s, y))
    assert (binary_kl(s, y) >= 0).all() and (multiclass_kl(sm, ym) >= -1e-12).all()


@pytest.mark.parametrize("name", ALL)
def test_binary_gradcheck(name: str) -> None:
    cs = candidate_losses([name], "binary", focal_gamma=1.5)
    # |t*s - 1| >= 0.2 keeps the hinge away from its kink
    s = torch.tensor([-2.3, -0.6, 0.3, 1.7, -4.0, 0.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    assert torch.autograd.gradcheck(lambda v: cs(v, y), (s,))


@pytest.mark.parametrize("name", ALL)
def test_multiclass_gradcheck(name: str) -> None:
    cs = candidate_losses([name], "multiclass", focal_gamma=1.5)
    # every margin 1 - s_y + s_c stays >= 0.15 away from 0
    s = torch.tensor(
        [[0.2, -1.0, 2.0, 0.5], [1.5, 0.3, -0.4, -2.0], [-2.0, -2.5, 1.0, 0.1]],
        dtype=torch.float64,
        requires_grad=True,
    )
    y = torch.tensor([2, 0, 3])
    assert torch.autograd.gradcheck(lambda v: cs(v, y), (s,))


@pytest.mark.parametrize("big", [50.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_extreme_logits(big: float, dtype: torch.dtype) -> None:
    cs = candidate_losses(ALL, "binary")
    s = torch.tensor([-big, -big, big, big], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    out = cs(s, y)
    (grad,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    col = {n: out[:, k].detach().double() for k, n in enumerate(ALL)}
    # right examples: ~0 loss for ce/focal/hinge/mse; wrong ones: linear in |s| (or 1 for mse)
    for n in ("ce", "focal", "hinge", "mse"):
        assert col[n][0] < 1e-12 and col[n][3] < 1e-12
    torch.testing.assert_close(col["ce"][[1, 2]], torch.tensor([big, big], dtype=torch.float64))
    torch.testing.assert_close(col["focal"][[1, 2]], torch.tensor([big, big], dtype=torch.float64))
    torch.testing.assert_close(
        col["hinge"][[1, 2]], torch.tensor([big + 1] * 2, dtype=torch.float64)
    )
    torch.testing.assert_close(col["mse"][[1, 2]], torch.tensor([1.0, 1.0], dtype=torch.float64))
    # kl of a confident right answer is eps/2 * |s| (the smoothed mass on the other outcome)
    exp_kl_right = (
        EPS / 2 * big + (EPS / 2) * math.log(EPS / 2) + (1 - EPS / 2) * math.log(1 - EPS / 2)
    )
    torch.testing.assert_close(
        col["kl"][[0, 3]],
        torch.tensor([exp_kl_right] * 2, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-4,
    )
    # BCE at s = 50, y = 0 is 50 (no log(0) = inf)
    if big == 50.0:
        assert abs(float(col["ce"][2]) - 50.0) < 1e-5


@pytest.mark.parametrize("big", [50.0, 1e4])
def test_multiclass_extreme_logits(big: float) -> None:
    cs = candidate_losses(ALL, "multiclass")
    s = torch.tensor([[big, 0.0, -big], [big, 0.0, -big], [-big, big, 0.0]], requires_grad=True)
    y = torch.tensor([0, 2, 1])
    out = cs(s, y)
    (grad,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    out = out.detach()
    k = {n: i for i, n in enumerate(ALL)}
    assert float(out[0, k["ce"]]) < 1e-6 and float(out[0, k["focal"]]) < 1e-6
    assert abs(float(out[1, k["ce"]]) - 2 * big) / (2 * big) < 1e-5
    assert abs(float(out[1, k["focal"]]) - 2 * big) / (2 * big) < 1e-5
    assert abs(float(out[1, k["mse"]]) - 2.0) < 1e-5


def test_focal_gradient_finite_when_probability_rounds_to_one() -> None:
    # p_t == 1.0 exactly in float32; a fractional gamma would give inf/nan via (1 - p_t)^gamma
    s = torch.tensor([30.0, -30.0], requires_grad=True)
    cs = candidate_losses("focal", "binary", focal_gamma=0.5)
    out = cs(s, torch.tensor([1, 0]))
    (grad,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(grad).all() and torch.isfinite(out).all()
    cm = candidate_losses("focal", "multiclass", focal_gamma=0.5)
    sm = torch.tensor([[40.0, -40.0, 0.0]], requires_grad=True)
    (gm,) = torch.autograd.grad(cm(sm, torch.tensor([0])).sum(), sm)
    assert torch.isfinite(gm).all()


def test_default_set_and_weighted_loss() -> None:
    assert DEFAULT_CANDIDATES == ("focal", "kl", "hinge", "ce")
    cs = candidate_losses("focal,kl,hinge,ce", "binary")
    assert cs.names == DEFAULT_CANDIDATES and len(cs) == 4 and cs.index("hinge") == 2
    s = torch.tensor(BIN_S)
    y = torch.tensor(BIN_Y)
    losses = cs(s, y)
    w = torch.softmax(torch.randn(len(BIN_S), 4, generator=torch.Generator().manual_seed(0)), 1)
    expected = sum(float((w[i] * losses[i]).sum()) for i in range(len(BIN_S))) / len(BIN_S)
    assert abs(float(weighted_loss(w, losses)) - expected) < 1e-5
    # one-hot weights on "ce" give the mean BCE
    onehot = torch.zeros(len(BIN_S), 4)
    onehot[:, 3] = 1
    torch.testing.assert_close(
        weighted_loss(onehot, losses),
        F.binary_cross_entropy_with_logits(s, y.float()),
    )


def test_int32_labels_and_shape_errors() -> None:
    cm = candidate_losses("ce,hinge,focal", "multiclass")
    s = torch.tensor(MC_S)
    torch.testing.assert_close(
        cm(s, torch.tensor(MC_Y, dtype=torch.int32)), cm(s, torch.tensor(MC_Y))
    )
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        cm(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B,\)"):
        candidate_losses("ce", "binary")(torch.zeros(4, 1), torch.zeros(4))
