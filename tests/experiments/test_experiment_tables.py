"""results.csv and table.md: columns, numbers recomputed independently, Welch t-tests vs scipy."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from autoloss.errors import DataError
from autoloss.experiments.compare import finish_experiment
from autoloss.experiments.tables import (
    AUTOLOSS_METHODS,
    BEST_FIXED_MARK,
    LEARNT_METHODS,
    REQUIRED_COLUMNS,
    MethodStats,
    best_baseline,
    fmt_p,
    read_results_csv,
    render_markdown,
    significance_rows,
    summarize,
)
from autoloss.metrics import welch_ttest
from experiments.fake_runs import write_fake_experiment


def _section_rows(table_md: str, heading: str) -> list[list[str]]:
    block = table_md.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _mean_std(cell: str) -> tuple[float, float, bool]:
    bold = cell.startswith("**")
    m = re.fullmatch(r"\**([0-9.]+) ± ([0-9.]+)\**", cell)
    assert m, cell
    return float(m.group(1)), float(m.group(2)), bold


def test_welch_matches_scipy_and_the_formula_on_known_values() -> None:
    a = np.array([0.8092, 0.8089, 0.8095, 0.8090, 0.8094])
    b = np.array([0.8056, 0.8061, 0.8052, 0.8058, 0.8050, 0.8057])
    t, p = welch_ttest(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-12)
    # Welch by hand: t = Δmean / sqrt(va/na + vb/nb), Welch–Satterthwaite degrees of freedom
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t_hand = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    assert t == pytest.approx(t_hand, rel=1e-10)
    assert p == pytest.approx(2 * stats.t.sf(abs(t_hand), df), rel=1e-9)
    # small integers: t = (2 - 5.5) / sqrt(1/3 + (5/3)/4) = -3.5 / sqrt(0.75) exactly
    t2, p2 = welch_ttest([1, 2, 3], [4, 5, 6, 7])
    assert t2 == pytest.approx(-3.5 / math.sqrt(0.75), rel=1e-12)
    assert fmt_p(p2) == fmt_p(stats.ttest_ind([1, 2, 3], [4, 5, 6, 7], equal_var=False).pvalue)
    assert math.isnan(welch_ttest([1, 1], [2, 2])[1])  # no variance: no test (shown as n/a)


def test_results_csv_has_the_spec_columns_first(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp", methods=("ce", "search", "autoloss"), seeds=(1, 2)
    )
    finish_experiment(exp)
    with open(tmp_path / "exp" / "results.csv", newline="") as fh:
        header = next(csv.reader(fh))
    assert tuple(header[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    rows = read_results_csv(tmp_path / "exp" / "results.csv")
    assert len(rows) == 2 * 3 * 2
    assert {r["seed"] for r in rows} == {1, 2}
    search = [r for r in rows if r["method"] == "search"]
    assert all(r["search_seconds"] == 12.5 for r in search)
    assert all(math.isnan(r["search_seconds"]) for r in rows if r["method"] != "search")


def test_table_numbers_equal_those_recomputed_from_results_csv(tmp_path: Path) -> None:
    exp = write_fake_experiment(tmp_path / "exp")
    outcome = finish_experiment(exp)
    table = (tmp_path / "exp" / "table.md").read_text()
    assert table == outcome.table
    df = pd.read_csv(tmp_path / "exp" / "results.csv")
    rows = _section_rows(table, "## Mean ± std and significance")
    assert len(rows) == len(exp.models) * len(exp.methods)
    for model, g in df.groupby("model"):
        # the best fixed loss: by validation AUC, among the fixed methods (slf and darts learn)
        valid = g[~g.method.isin(LEARNT_METHODS)].groupby("method")["valid_auc"].mean()
        best_base = valid.idxmax()
        assert best_base == "ce"
        assert g.groupby("method")["test_auc"].mean().drop(["autoloss"]).idxmax() == "slf"
        line = next(
            ln
            for ln in table.splitlines()
            if ln.startswith("Best fixed loss (by validation AUC): ")
        )
        assert f"{model}: ce (mean valid AUC {valid['ce']:.4f})" in line
        for row in (r for r in rows if r[0] == model):
            method = row[1].replace(BEST_FIXED_MARK, "")
            assert (method == best_base) == row[1].endswith(BEST_FIXED_MARK)
            sel = g[g.method == method]
            assert int(row[2]) == len(sel) == 5
            for metric, (val, p_ce, p_best) in (("test_auc", row[3:6]), ("test_logloss", row[6:9])):
                mean, std, bold = _mean_std(val)
                assert mean == pytest.approx(sel[metric].mean(), abs=5e-5)
                assert std == pytest.approx(sel[metric].std(ddof=1), abs=5e-5)
                by_method = g.groupby("method")[metric].mean()
                best = by_method.idxmax() if metric == "test_auc" else by_method.idxmin()
                assert bold == (method == best)
                ce = g[g.method == "ce"][metric].to_numpy()
                ref = g[g.method == best_base][metric].to_numpy()
                want_ce = (
                    "–"
                    if method == "ce"
                    else fmt_p(stats.ttest_ind(sel[metric], ce, equal_var=False).pvalue)
                )
                want_best = (
                    "–"
                    if method == best_base
                    else fmt_p(stats.ttest_ind(sel[metric], ref, equal_var=False).pvalue)
                )
                assert (p_ce, p_best) == (want_ce, want_best)
    # the paper-style table carries the same means
    paper = _section_rows(table, "## Test AUC / logloss")
    methods = list(exp.methods)
    for row in paper:
        g = df[df.model == row[0]]
        for method, cell in zip(methods, row[1:]):
            auc, ll = (float(x.strip("*")) for x in cell.split(" / "))
            assert auc == pytest.approx(g[g.method == method].test_auc.mean(), abs=5e-5)
            assert ll == pytest.approx(g[g.method == method].test_logloss.mean(), abs=5e-5)
    eff = _section_rows(table, "## Efficiency")
    for row in eff:
        sel = df[(df.model == row[0]) & (df.method == row[1])]
        assert float(row[3].split(" ± ")[0]) == pytest.approx(sel.train_seconds.mean(), abs=0.05)
        assert float(row[5]) == pytest.approx(sel.epochs.mean(), abs=0.05)


def _cell(
    method: str, test_auc: float, valid_auc: float, valid_logloss: float = 0.4
) -> MethodStats:
    values = {
        "test_auc": np.array([test_auc]),
        "valid_auc": np.array([valid_auc]),
        "valid_logloss": np.array([valid_logloss]),
    }
    return MethodStats("m", method, [1], values)


def test_best_baseline_is_a_fixed_method_and_single_seed_has_no_test() -> None:
    assert AUTOLOSS_METHODS < LEARNT_METHODS
    assert {"darts", "slf", "reweight"} < LEARNT_METHODS
    cells = [
        _cell("ce", 0.80, 0.79),
        _cell("autoloss", 0.90, 0.90),
        _cell("autoloss-soft", 0.85, 0.85),
        _cell("darts", 0.81, 0.88),
        _cell("slf", 0.82, 0.87),
        _cell("reweight", 0.83, 0.86),
    ]
    assert best_baseline(cells) == "ce"
    assert best_baseline(cells[1:]) is None  # only learnt methods: no best fixed loss
    rows = [
        {
            "model": "m",
            "method": meth,
            "seed": 1,
            "test_auc": auc,
            "test_logloss": 0.4,
            "task": "binary",
        }
        for meth, auc in (("ce", 0.8), ("autoloss", 0.9))
    ]
    s = summarize(rows)
    assert math.isnan(s.models[0].p_vs_ce[("autoloss", "test_auc")])
    assert math.isnan(s.models[0].cells[0].std("test_auc"))


def test_best_fixed_loss_is_chosen_by_validation_not_test() -> None:
    cells = [
        _cell("ce", test_auc=0.800, valid_auc=0.790),
        _cell("focal", test_auc=0.810, valid_auc=0.785),  # best on test
        _cell("uniform", test_auc=0.795, valid_auc=0.795),  # best on validation
        _cell("search", test_auc=0.790, valid_auc=math.nan),  # no validation AUC: skipped
        _cell("weights:1,0,0,1", test_auc=0.799, valid_auc=0.792),
        _cell("autoloss", test_auc=0.820, valid_auc=0.820),
        _cell("darts", test_auc=0.815, valid_auc=0.815),
    ]
    assert best_baseline(cells) == "uniform"
    # a tie on validation AUC goes to the lower validation logloss, whatever the test says
    tied = [
        _cell("kl", test_auc=0.81, valid_auc=0.79, valid_logloss=0.45),
        _cell("hinge", test_auc=0.80, valid_auc=0.79, valid_logloss=0.44),
    ]
    assert best_baseline(tied) == "hinge"
    assert best_baseline([_cell("ce", 0.8, math.nan)]) is None
    # cells without validation columns at all (older tables): no best fixed loss, no error
    assert best_baseline([MethodStats("m", "ce", [1], {"test_auc": np.array([0.8])})]) is None


def test_table_marks_the_best_fixed_loss_by_validation(tmp_path: Path) -> None:
    rows = [
        {
            "model": "m",
            "method": meth,
            "seed": seed,
            "test_auc": test + 0.001 * seed,
            "test_logloss": 0.4,
            "valid_auc": valid + 0.001 * seed,
            "valid_logloss": 0.4,
            "task": "binary",
        }
        for meth, test, valid in (
            ("ce", 0.80, 0.79),
            ("focal", 0.81, 0.78),
            ("reweight", 0.83, 0.83),
            ("slf", 0.82, 0.82),
        )
        for seed in (1, 2, 3)
    ]
    summary = summarize(rows)
    assert summary.models[0].best_baseline == "ce"
    header, table_rows = significance_rows(summary)
    assert header.count("p vs best fixed loss") == 2
    assert [r[1] for r in table_rows] == ["ce" + BEST_FIXED_MARK, "focal", "reweight", "slf"]
    text = render_markdown(summary)
    assert "Best fixed loss (by validation AUC): m: ce (mean valid AUC 0.7920)." in text
    assert "highest mean validation AUC" in text and "test AUC for that model" not in text


def test_results_csv_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "results.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing columns"):
        read_results_csv(p)
    with pytest.raises(DataError, match="not found"):
        read_results_csv(tmp_path / "nope.csv")
