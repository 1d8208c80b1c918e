"""The robust candidates gce, mae and tce: hand computations, extreme logits, tce's truncation
and ramp, hyper-parameter validation, and the existing candidates left unchanged."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from autoloss.errors import ConfigError
from autoloss.losses import (
    DEFAULT_GCE_Q,
    DEFAULT_TCE_DROP,
    DEFAULT_TCE_RAMP_STEPS,
    CandidateSet,
    binary_ce,
    binary_gce,
    binary_mae,
    binary_tce,
    candidate_losses,
    candidate_names,
    get_candidate,
    multiclass_ce,
    multiclass_gce,
    multiclass_mae,
    multiclass_tce,
    tce_drop_rate,
)
from autoloss.policies.config import LossConfig
from autoloss.policies.fixed import UniformWeights

F64 = torch.float64

# Binary: s = [2, -1, 0, 3], y = [1, 1, 0, 0]
#   p_t = sigmoid(t*s) = [0.88079707797788, 0.26894142136999, 0.5, 0.04742587317757]
BIN_S = [2.0, -1.0, 0.0, 3.0]
BIN_Y = [1, 1, 0, 0]
# (1 - p_t^0.7) / 0.7
BIN_GCE = [0.12145261482382994, 0.858850272271256, 0.5491825618964884, 1.2594834645263915]
# (1 - p_t^0.3) / 0.3
BIN_GCE_Q03 = [0.12454178677956988, 1.085438164033252, 0.6258253454792148, 1.9977120039429506]
# |y - sigmoid(s)| = 1 - p_t
BIN_MAE = [0.11920292202211769, 0.7310585786300049, 0.5, 0.9525741268224334]

# Multi-class: softmax rows, p_y = [0.66524095577482, 1/3, 0.90875992425851]
MC_S = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, -1.0, 0.5]]
MC_Y = [1, 2, 0]
MC_GCE = [0.354613557821289, 0.7664813474686147, 0.09254091634210157]
MC_MAE = [0.3347590442251781, 0.6666666666666667, 0.09124007574148685]

# tce, binary: rows 0-4 positives, 5-7 negatives;
#   CE = [3.048587, 1.313262, 0.474077, 0.126928, 2.126928 | 4.018150, 0.018150, 1.313262]
#   positives by CE, largest first: rows 0, 4, 1, 2, 3; row 5 (a negative) has the largest CE.
TCE_S = [-3.0, -1.0, 0.5, 2.0, -2.0, 4.0, -4.0, 1.0]
TCE_Y = [1, 1, 1, 1, 1, 0, 0, 0]


def _t(values: list[float] | list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _tce_set(task: str = "binary") -> CandidateSet:
    # drop 0.4 at the end of a 10-step ramp: 2 of 5 positives at step >= 10, 1 at step 5
    return candidate_losses("ce,tce", task, tce_drop=0.4, tce_ramp_steps=10)


# ------------------------------------------------------------------------ hand computations


def test_binary_gce_and_mae_by_hand() -> None:
    s, y = _t(BIN_S), torch.tensor(BIN_Y)
    out = candidate_losses("gce,mae", "binary")(s, y)
    torch.testing.assert_close(out[:, 0], _t(BIN_GCE))
    torch.testing.assert_close(out[:, 1], _t(BIN_MAE))
    torch.testing.assert_close(binary_gce(s, y), _t(BIN_GCE))
    torch.testing.assert_close(binary_mae(s, y), _t(BIN_MAE))
    # float labels give the same (hard) values; gce_q is passed through
    q03 = candidate_losses("gce", "binary", gce_q=0.3)(s, y.to(F64))[:, 0]
    torch.testing.assert_close(q03, _t(BIN_GCE_Q03))
    torch.testing.assert_close(binary_gce(s, y, q=0.3), _t(BIN_GCE_Q03))
    # mae is |y - sigmoid(s)|
    torch.testing.assert_close(binary_mae(s, y), (y.to(F64) - torch.sigmoid(s)).abs())


def test_multiclass_gce_and_mae_by_hand() -> None:
    s, y = _t(MC_S), torch.tensor(MC_Y)
    out = candidate_losses("gce,mae", "multiclass")(s, y)
    torch.testing.assert_close(out[:, 0], _t(MC_GCE))
    torch.testing.assert_close(out[:, 1], _t(MC_MAE))
    torch.testing.assert_close(multiclass_gce(s, y), _t(MC_GCE))
    torch.testing.assert_close(multiclass_mae(s, y), _t(MC_MAE))
    # mae is half the L1 distance between onehot(y) and softmax(s)
    half_l1 = (F.one_hot(y, 3).to(F64) - torch.softmax(s, 1)).abs().sum(1) / 2
    torch.testing.assert_close(out[:, 1], half_l1)


def test_gce_limits_q1_is_mae_small_q_is_ce() -> None:
    s, y = _t(BIN_S), torch.tensor(BIN_Y)
    torch.testing.assert_close(binary_gce(s, y, q=1.0), binary_mae(s, y))
    torch.testing.assert_close(binary_gce(s, y, q=1e-7), binary_ce(s, y), rtol=1e-5, atol=1e-6)
    sm, ym = _t(MC_S), torch.tensor(MC_Y)
    torch.testing.assert_close(multiclass_gce(sm, ym, q=1.0), multiclass_mae(sm, ym))
    torch.testing.assert_close(
        multiclass_gce(sm, ym, q=1e-7), multiclass_ce(sm, ym), rtol=1e-5, atol=1e-6
    )


def test_mae_exact_when_probability_rounds_to_one() -> None:
    # sigmoid(20) == 1.0 in float32; 1 - p_t from log(1 - p_t) is still exp(-20) (not 0)
    s = torch.tensor([20.0, -20.0])
    out = binary_mae(s, torch.tensor([1, 0]))
    torch.testing.assert_close(out, torch.full((2,), math.exp(-20.0)), rtol=1e-5, atol=0.0)
    # and gce of a sure right answer is ~ -log p_t = exp(-20) (no 1 - p^q cancellation to 0)
    g = binary_gce(s, torch.tensor([1, 0]))
    assert float(g[0]) > 0
    torch.testing.assert_close(g, torch.full((2,), math.exp(-20.0)), rtol=1e-4, atol=0.0)


# ------------------------------------------------------------------------ tce


def test_tce_drops_top_ce_positives_at_a_step() -> None:
    s, y = _t(TCE_S), torch.tensor(TCE_Y)
    ce = binary_ce(s, y)
    cs = _tce_set()
    for step, dropped in ((0, []), (3, []), (5, [0]), (7, [0]), (10, [0, 4]), (10**6, [0, 4])):
        out = cs(s, y, step=step)
        torch.testing.assert_close(out[:, 0], ce)  # ce ignores the step
        expected = ce.clone()
        expected[dropped] = 0.0
        torch.testing.assert_close(out[:, 1], expected, rtol=0, atol=0)
        kept = [i for i in range(len(TCE_S)) if i not in dropped]
        assert (out[dropped, 1] == 0).all() and (out[kept, 1] > 0).all(), step
    # the standalone function takes the rate: floor(0.6 * 5) = 3 positives (rows 0, 4, 1)
    expected = ce.clone()
    expected[[0, 1, 4]] = 0.0
    torch.testing.assert_close(binary_tce(s, y, 0.6), expected, rtol=0, atol=0)


def test_tce_never_drops_negatives() -> None:
    # only negatives: nothing is dropped whatever the rate
    s = _t([5.0, 3.0, -1.0, 8.0])
    y = torch.zeros(4, dtype=torch.long)
    torch.testing.assert_close(binary_tce(s, y, 0.99), binary_ce(s, y), rtol=0, atol=0)
    # mixed: the negative with the largest CE of the batch (row 5) keeps its loss
    out = binary_tce(_t(TCE_S), torch.tensor(TCE_Y), 0.8)  # floor(0.8 * 5) = 4 positives
    ce = binary_ce(_t(TCE_S), torch.tensor(TCE_Y))
    torch.testing.assert_close(out[5:], ce[5:], rtol=0, atol=0)
    assert (out[[0, 1, 2, 4]] == 0).all() and float(out[3]) == float(ce[3])


def test_tce_dropped_rows_have_exactly_zero_gradient() -> None:
    s = _t(TCE_S).requires_grad_(True)
    y = torch.tensor(TCE_Y)
    out = _tce_set()(s, y, step=10)[:, 1]
    (grad,) = torch.autograd.grad(out.sum(), s)
    assert grad[0].item() == 0.0 and grad[4].item() == 0.0
    # kept rows: the BCE gradient sigmoid(s) - y
    kept = [1, 2, 3, 5, 6, 7]
    torch.testing.assert_close(grad[kept], (torch.sigmoid(s) - y.to(F64)).detach()[kept])
    # the selection is detached: gradcheck holds away from ties
    cs = _tce_set()
    assert torch.autograd.gradcheck(lambda v: cs(v, y, step=10), (s,))


def test_tce_ramp() -> None:
    assert tce_drop_rate(0) == 0.0
    assert tce_drop_rate(2500) == pytest.approx(0.05)
    assert tce_drop_rate(5000, 0.3, 10000) == pytest.approx(0.15)
    assert tce_drop_rate(10000) == pytest.approx(DEFAULT_TCE_DROP)
    assert tce_drop_rate(10**7) == pytest.approx(DEFAULT_TCE_DROP)
    assert tce_drop_rate(1, 0.5, 1) == 0.5
    with pytest.raises(ValueError, match="step"):
        tce_drop_rate(-1)
    cs = _tce_set()
    assert [cs.tce_rate(t) for t in (0, 5, 10, 20)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    # the number dropped grows with the step: 100 positives, drop 0.2 over 10 steps
    g = torch.Generator().manual_seed(0)
    s = torch.randn(100, generator=g, dtype=F64)
    y = torch.ones(100, dtype=torch.long)
    ramp = candidate_losses("tce", "binary", tce_drop=0.2, tce_ramp_steps=10)
    zeros = [int((ramp(s, y, step=t)[:, 0] == 0).sum()) for t in (0, 1, 5, 9, 10, 50)]
    assert zeros == [0, 2, 10, 18, 20, 20]
    # rate 0.29 of 100 drops 29 (float rounding of 0.29 * 100 = 28.999999999999996)
    assert int((binary_tce(s, y, 0.29) == 0).sum()) == 29


def test_tce_step_from_the_attribute_or_the_argument() -> None:
    s, y = _t(TCE_S), torch.tensor(TCE_Y)
    cs = _tce_set()
    cs.step = 5
    torch.testing.assert_close(cs(s, y), cs(s, y, step=5))
    # an explicit step wins over the attribute
    torch.testing.assert_close(cs(s, y, step=10)[:, 1], _tce_set()(s, y, step=10)[:, 1])
    # a policy's forward passes its own step count (LossPolicy.forward sets the attribute)
    policy = UniformWeights(candidate_losses("tce", "binary", tce_drop=0.4, tce_ramp_steps=10))
    policy.num_steps = 10
    expected = _tce_set()(s, y, step=10)[:, 1].mean()
    torch.testing.assert_close(policy(s, y), expected)


def test_tce_without_a_step_uses_full_rate_and_warns_once() -> None:
    s, y = _t(TCE_S), torch.tensor(TCE_Y)
    cs = _tce_set()
    with pytest.warns(RuntimeWarning, match="'tce' got no recommender step"):
        out = cs(s, y)
    torch.testing.assert_close(out, cs(s, y, step=10))  # full drop rate 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cs(s, y)  # only once per set
        candidate_losses("ce,gce,mae", "binary")(s, y)  # no step needed without tce


def test_tce_multiclass_drops_any_example() -> None:
    # every example is eligible: floor(0.4 * 5) = 2 with the largest CE get 0
    s = _t([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 4.0], [0.5, 0.0, 0.0]])
    y = torch.tensor([0, 0, 2, 0, 1])
    ce = multiclass_ce(s, y)  # [0.24, 3.10, 1.10, 4.04, 1.22]: rows 3 and 1 are the largest
    out = _tce_set("multiclass")(s, y, step=10)
    expected = ce.clone()
    expected[[1, 3]] = 0.0
    torch.testing.assert_close(out[:, 1], expected, rtol=0, atol=0)
    torch.testing.assert_close(multiclass_tce(s, y, 0.4), expected, rtol=0, atol=0)
    sg = s.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_tce_set("multiclass")(sg, y, step=10)[:, 1].sum(), sg)
    assert (grad[[1, 3]] == 0).all() and (grad[[0, 2, 4]] != 0).any(1).all()


def test_tce_ties_go_to_the_lower_row() -> None:
    s = _t([0.0, 0.0, 0.0, 0.0])
    y = torch.ones(4, dtype=torch.long)
    out = binary_tce(s, y, 0.5)
    assert out.tolist() == [0.0, 0.0, math.log(2), math.log(2)]


# ------------------------------------------------------------------------ extreme logits

NEW = ("gce", "mae", "tce")


@pytest.mark.parametrize("big", [50.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_extreme_logits(big: float, dtype: torch.dtype) -> None:
    cs = candidate_losses(NEW, "binary")
    s = torch.tensor([-big, -big, big, big], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1])
    out = cs(s, y, step=0)
    (grad,) = torch.autograd.grad(out.sum(), s)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    out = out.detach().double()
    # right (rows 0, 3): 0; wrong (rows 1, 2): gce 1/q, mae 1, tce = ce = |s|
    assert float(out[[0, 3]].abs().max()) < 1e-12
    torch.testing.assert_close(out[[1, 2], 0], torch.full((2,), 1 / DEFAULT_GCE_Q, dtype=F64))
    torch.testing.assert_close(out[[1, 2], 1], torch.ones(2, dtype=F64))
    torch.testing.assert_close(out[[1, 2], 2], torch.full((2,), big, dtype=F64))
    # with truncation: the one wrong positive is dropped (rate 0.5 of 2 positives)
    cs2 = candidate_losses("tce", "binary", tce_drop=0.5, tce_ramp_steps=1)
    s2 = s.detach().clone().requires_grad_(True)
    out2 = cs2(s2, y, step=1)
    (g2,) = torch.autograd.grad(out2.sum(), s2)
    assert torch.isfinite(g2).all() and float(out2[1, 0].detach()) == 0.0 and float(g2[1]) == 0.0


@pytest.mark.parametrize("big", [50.0, 1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multiclass_extreme_logits(big: float, dtype: torch.dtype) -> None:
    cs = candidate_losses(NEW, "multiclass", tce_drop=0.4, tce_ramp_steps=1)
    s = torch.tensor(
        [[big, 0.0, -big], [big, 0.0, -big], [-big, big, 0.0]], dtype=dtype, requires_grad=True
    )
    y = torch.tensor([0, 2, 1])
    out = cs(s, y, step=1)  # floor(0.4 * 3) = 1 dropped: row 1 (ce 2 * big)
    (grad,) = torch.autograd.grad(out.sum(), s, retain_graph=True)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    (g_tce,) = torch.autograd.grad(out[:, 2].sum(), s)
    assert (g_tce[1] == 0).all() and torch.isfinite(g_tce).all()
    out = out.detach().double()
    assert float(out[[0, 2]].abs().max()) < 1e-6
    assert abs(float(out[1, 0]) - 1 / DEFAULT_GCE_Q) < 1e-5
    assert abs(float(out[1, 1]) - 1.0) < 1e-6
    assert float(out[1, 2]) == 0.0


@pytest.mark.parametrize("name", NEW)
def test_gradcheck(name: str) -> None:
    cb = candidate_losses([name], "binary", gce_q=0.4, tce_drop=0.5, tce_ramp_steps=4)
    s = torch.tensor([-2.3, -0.6, 0.3, 1.7, -4.0, 0.0], dtype=F64, requires_grad=True)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    assert torch.autograd.gradcheck(lambda v: cb(v, y, step=3), (s,))
    cm = candidate_losses([name], "multiclass", gce_q=0.4, tce_drop=0.5, tce_ramp_steps=4)
    sm = torch.tensor(
        [[0.2, -1.0, 2.0, 0.5], [1.5, 0.3, -0.4, -2.0], [-2.0, -2.5, 1.0, 0.1]],
        dtype=F64,
        requires_grad=True,
    )
    ym = torch.tensor([2, 0, 3])
    assert torch.autograd.gradcheck(lambda v: cm(v, ym, step=3), (sm,))


# ------------------------------------------------------------------------ options, registry


def test_validation_errors_name_the_key() -> None:
    bad = [
        ({"gce_q": 0.0}, "loss.gce_q"),
        ({"gce_q": 1.5}, "loss.gce_q"),
        ({"gce_q": float("nan")}, "loss.gce_q"),
        ({"tce_drop": -0.1}, "loss.tce_drop"),
        ({"tce_drop": 1.0}, "loss.tce_drop"),
        ({"tce_drop": float("nan")}, "loss.tce_drop"),
        ({"tce_ramp_steps": 0}, "loss.tce_ramp_steps"),
        ({"tce_ramp_steps": 2.5}, "loss.tce_ramp_steps"),
        ({"tce_ramp_steps": True}, "loss.tce_ramp_steps"),
    ]
    for kwargs, key in bad:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            candidate_losses("ce,tce", "binary", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            CandidateSet([get_candidate("ce")], "binary", **kwargs)  # type: ignore[arg-type]
    # the edges of the ranges are allowed
    cs = candidate_losses("gce,tce", "binary", gce_q=1.0, tce_drop=0.0, tce_ramp_steps=1)
    assert (cs.gce_q, cs.tce_drop, cs.tce_ramp_steps, cs.step) == (1.0, 0.0, 1, None)


def test_registry_and_config_defaults() -> None:
    assert candidate_names()[:8] == ["ce", "focal", "kl", "hinge", "mse", "gce", "mae", "tce"]
    for name in NEW:
        assert get_candidate(name).multiclass is not None and get_candidate(name).doc
    assert candidate_losses("focal,kl,hinge,ce,gce", "binary").names[-1] == "gce"
    cs = candidate_losses("ce", "multiclass")
    assert (cs.gce_q, cs.tce_drop, cs.tce_ramp_steps) == (0.7, 0.2, 10000)
    cfg = LossConfig()
    assert (cfg.gce_q, cfg.tce_drop, cfg.tce_ramp_steps) == (
        DEFAULT_GCE_Q,
        DEFAULT_TCE_DROP,
        DEFAULT_TCE_RAMP_STEPS,
    )
    # the registered (non-fused) functions: tce's is the ramp's end
    s, y = _t(TCE_S), torch.tensor(TCE_Y)
    torch.testing.assert_close(get_candidate("tce").binary(s, y), binary_tce(s, y, 0.2))
    torch.testing.assert_close(get_candidate("gce").binary(s, y), binary_gce(s, y))


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_existing_candidates_unchanged_by_new_options(task: str) -> None:
    old = ("ce", "focal", "kl", "hinge", "mse")
    if task == "binary":
        s, y = _t(BIN_S), torch.tensor(BIN_Y)
    else:
        s, y = _t(MC_S), torch.tensor(MC_Y)
    base = candidate_losses(old, task)(s, y)
    other = candidate_losses([*old, *NEW], task, gce_q=0.3, tce_drop=0.5, tce_ramp_steps=1)
    for step in (0, 7):
        torch.testing.assert_close(other(s, y, step=step)[:, :5], base, rtol=0, atol=0)
    # and the step changes nothing for them
    torch.testing.assert_close(candidate_losses(old, task)(s, y, step=3), base, rtol=0, atol=0)
