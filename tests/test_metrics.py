"""Metrics equal scikit-learn / scipy on random data with many ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit, softmax
from sklearn.metrics import log_loss, roc_auc_score

from autoloss.errors import AutolossError
from autoloss.metrics import (
    UndefinedMetricError,
    binary_auc,
    binary_logloss,
    evaluate,
    holm,
    multiclass_auc,
    multiclass_logloss,
    paired_ttest,
    welch_ttest,
)


@pytest.mark.parametrize("seed", range(6))
def test_binary_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 5000))
    rate = [0.02, 0.3, 0.5, 0.7, 0.97, 0.5][seed]
    y = (rng.random(n) < rate).astype(np.int64)
    y[0], y[-1] = 0, 1  # both classes present
    # few distinct values -> large tie groups; both positive-minority and negative-minority cases
    scores = np.round(rng.normal(size=n) + 0.7 * y, 1)
    if seed % 2:
        scores = scores.astype(np.float32)
    assert abs(binary_auc(y, scores) - roc_auc_score(y, scores)) < 1e-9
    assert abs(binary_auc(y.astype(bool), scores) - roc_auc_score(y, scores)) < 1e-9


def test_binary_auc_edge_cases() -> None:
    assert binary_auc([0, 1], [0.1, 0.9]) == 1.0
    assert binary_auc([1, 0], [0.1, 0.9]) == 0.0
    assert binary_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5  # all tied
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([-0.0, 0.0, 0.0, np.inf, -np.inf, 3])  # -0.0 ties with 0.0; infinities sort
    assert (
        abs(binary_auc(y, s) - roc_auc_score(y, np.where(np.isinf(s), np.sign(s) * 1e300, s)))
        < 1e-12
    )
    assert binary_auc(torch.tensor([0, 1]), torch.tensor([0.2, 0.1])) == 0.0
    with pytest.raises(UndefinedMetricError, match="only one class"):
        binary_auc([1, 1, 1], [0.1, 0.2, 0.3])
    err = UndefinedMetricError("x")
    assert isinstance(err, ValueError) and isinstance(err, AutolossError)
    with pytest.raises(ValueError, match="0 or 1"):
        binary_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        binary_auc([0, 1], [np.nan, 0.2])
    with pytest.raises(ValueError, match="labels for"):
        binary_auc([0, 1, 1], [0.1, 0.2])


def test_binary_auc_large_counts_are_exact() -> None:
    # 400k rows, 3 distinct scores: int64 rank sums, still exact
    rng = np.random.default_rng(7)
    y = (rng.random(400_000) < 0.4).astype(np.int8)
    s = rng.integers(0, 3, 400_000).astype(np.float64) + y * (rng.random(400_000) < 0.2)
    assert abs(binary_auc(y, s) - roc_auc_score(y, s)) < 1e-9


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_binary_logloss_matches_sklearn(dtype: type) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    p = np.round(rng.random(2000), 2).astype(dtype)
    p[:5] = [0.0, 1.0, 0.0, 1.0, 1e-9]  # clipped like sklearn
    y[:5] = [1, 0, 0, 1, 1]
    assert abs(binary_logloss(y, p) - log_loss(y, p, labels=[0, 1])) < 1e-9
    # from logits: exact, equal to sklearn away from the clipping range
    s = rng.normal(0, 3, 2000)
    assert abs(binary_logloss(y, s, from_logits=True) - log_loss(y, expit(s))) < 1e-9
    # stable at extreme logits: one example at -60 with y=1 costs 60
    assert abs(binary_logloss([1, 0], [-60.0, -1e4], from_logits=True) - 30.0) < 1e-9


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(2)
    n, c = 3000, 5
    y = rng.integers(0, c, n)
    logits = np.round(rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y], 0)  # many ties per column
    probs = softmax(logits, axis=1)
    expected_auc = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert abs(multiclass_auc(y, probs) - expected_auc) < 1e-9
    assert abs(multiclass_logloss(y, probs) - log_loss(y, probs)) < 1e-9
    assert abs(multiclass_logloss(y, logits, from_logits=True) - log_loss(y, probs)) < 1e-9
    with pytest.raises(UndefinedMetricError, match=r"classes \[4\]"):
        multiclass_auc(np.minimum(y, 3), probs)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        multiclass_logloss(y + 1, probs)


def test_evaluate_from_logits_numpy_and_torch() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 1000)
    s = np.round(rng.normal(size=1000) + y, 1).astype(np.float32)
    res = evaluate(y, s, "binary")
    p = expit(s.astype(np.float64))
    assert set(res) == {"auc", "logloss"}
    assert abs(res["auc"] - roc_auc_score(y, p)) < 1e-9
    assert abs(res["logloss"] - log_loss(y, p)) < 1e-9
    res_t = evaluate(torch.from_numpy(y), torch.from_numpy(s).requires_grad_(), "binary")
    assert res_t == res
    assert evaluate(y, s[:, None], "binary") == res

    ym = rng.integers(0, 3, 1000)
    sm = rng.normal(size=(1000, 3))
    pm = softmax(sm, axis=1)
    rm = evaluate(torch.from_numpy(ym), torch.from_numpy(sm), "multiclass")
    assert abs(rm["auc"] - roc_auc_score(ym, pm, multi_class="ovr")) < 1e-9
    assert abs(rm["logloss"] - log_loss(ym, pm)) < 1e-9

    single = evaluate(np.ones(4), np.array([0.1, 0.2, 0.3, 0.4]), "binary")
    assert math.isnan(single["auc"]) and math.isfinite(single["logloss"])
    with pytest.raises(ValueError, match="task"):
        evaluate(y, s, "regression")


def test_welch_ttest_matches_scipy() -> None:
    a = [0.8092, 0.8088, 0.8095, 0.8090, 0.8091]
    b = [0.8056, 0.8060, 0.8051, 0.8058, 0.8055]
    t, p = welch_ttest(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert abs(t - ref.statistic) < 1e-12 and abs(p - ref.pvalue) < 1e-15
    # by hand: means 2 and 4, variances 1 and 4, n = 3 each -> t = -2 / sqrt(5/3),
    # Welch-Satterthwaite df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    t2, p2 = welch_ttest([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert abs(t2 - (-2 / math.sqrt(5 / 3))) < 1e-12
    assert abs(p2 - 2 * stats.t.sf(2 / math.sqrt(5 / 3), df=50 / 17)) < 1e-12
    assert abs(p2 - 0.2208808) < 1e-6
    assert all(math.isnan(v) for v in welch_ttest([1.0], [1.0, 2.0]))
    assert all(math.isnan(v) for v in welch_ttest([0.8, 0.8], [0.81, 0.81]))


def test_paired_ttest_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 5, 10):
        a = 0.80 + rng.normal(0, 0.002, n)
        b = a - 0.001 + rng.normal(0, 0.001, n)
        t, p = paired_ttest(a, b)
        ref = stats.ttest_rel(a, b)
        assert t == pytest.approx(ref.statistic, rel=1e-12)
        assert p == pytest.approx(ref.pvalue, rel=1e-12)
    # by hand: differences 1, 2, 2, 3 -> mean 2, sd sqrt(2/3), t = 2 / (sd / 2), 3 df
    t2, p2 = paired_ttest([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])
    assert t2 == pytest.approx(4 / math.sqrt(2 / 3), rel=1e-12)
    assert p2 == pytest.approx(2 * stats.t.sf(4 / math.sqrt(2 / 3), df=3), rel=1e-12)
    # pairing matters: the same values unpaired (Welch) are far less significant
    assert welch_ttest([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0])[1] > 2 * p2
    assert all(math.isnan(v) for v in paired_ttest([0.8], [0.7]))  # one pair: no test
    assert all(math.isnan(v) for v in paired_ttest([0.8, 0.9], [0.7, 0.8]))  # constant difference
    with pytest.raises(ValueError, match="pair"):
        paired_ttest([1.0, 2.0], [1.0, 2.0, 3.0])


def test_holm_against_a_hand_computation() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06,
    # the running maximum keeps the adjusted values in the order of the raw ones)
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    # capped at 1; a nan (no test) stays nan and does not count in m (m = 3 here)
    out = holm([0.5, math.nan, 0.2, 0.01])
    assert math.isnan(out[1])
    assert [out[0], out[2], out[3]] == pytest.approx([min(1.0, max(0.5, 0.4)), 0.4, 0.03])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []
    assert holm([0.04]) == [0.04]  # a family of one: unadjusted
