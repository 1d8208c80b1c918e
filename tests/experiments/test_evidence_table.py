"""benchmarks/evidence_table.py: the pre-registered primary family (--primary), the best fixed
loss chosen by validation AUC, exploratory rows, --json and --development."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import stats

from autoloss.metrics import holm

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (1, 2, 3, 4)
#: condition -> variant -> method -> (mean test AUC, mean valid AUC)
GRID: dict[str, dict[str, dict[str, tuple[float, float]]]] = {
    "noisy": {
        "methods": {
            "ce": (0.800, 0.785),
            "focal": (0.812, 0.780),  # the best fixed loss on test ...
            "kl": (0.798, 0.790),  # ... kl on validation: kl is the best fixed loss
            "uniform": (0.801, 0.786),
            "slf": (0.806, 0.900),  # learnt: never the best fixed loss
            "reweight": (0.810, 0.950),
        },
        "cemeta": {"ce": (0.803, 0.786)},
    },
    "clean": {  # no cemeta variant; ce is the best fixed loss
        "methods": {
            "ce": (0.820, 0.810),
            "focal": (0.825, 0.805),
            "reweight": (0.821, 0.830),
        },
    },
}


@pytest.fixture(scope="module")
def et() -> ModuleType:
    path = ROOT / "benchmarks" / "evidence_table.py"
    spec = importlib.util.spec_from_file_location("evidence_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _aucs(cond: str, variant: str, method: str) -> tuple[list[float], list[float]]:
    """Per-seed (test AUC, valid AUC): the mean, a seed effect shared by every method, and a
    jitter of the method's own."""
    test, valid = GRID[cond][variant][method]
    rng = np.random.default_rng(len(cond) * 1000 + len(variant) * 100 + sum(map(ord, method)))
    shared = np.array([0.000, 0.002, -0.001, 0.003])
    jitter = rng.normal(0.0, 0.001, size=(2, len(SEEDS)))
    return list(test + shared + jitter[0]), list(valid + shared + jitter[1])


@pytest.fixture
def exp_root(tmp_path: Path) -> Path:
    for cond, variants in GRID.items():
        for variant, methods in variants.items():
            for method in methods:
                test, valid = _aucs(cond, variant, method)
                for seed, t, v in zip(SEEDS, test, valid):
                    run = tmp_path / f"{cond}-{variant}" / "runs" / f"{method}-s{seed}"
                    run.mkdir(parents=True)
                    result = {
                        "method": method,
                        "seed": seed,
                        "test": {"auc": t, "logloss": 0.45, "logloss_ts": 0.44},
                        "valid": {"auc": v, "logloss": 0.44},
                    }
                    (run / "result.json").write_text(json.dumps(result))
    return tmp_path


def _p(cond: str, a: tuple[str, str], b: tuple[str, str]) -> float:
    return float(stats.ttest_rel(_aucs(cond, *a)[0], _aucs(cond, *b)[0]).pvalue)


def _rows(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the first table after ``heading``, by their first cell."""
    block = text.split(heading, 1)[1].split("\n\n", 2)[1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")][2:]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return {c[0]: c[1:] for c in cells}


def _run(et: ModuleType, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    et.main([*map(str, argv)])
    return capsys.readouterr().out


def test_best_fixed_loss_is_chosen_by_validation_auc(et: ModuleType, exp_root: Path) -> None:
    data = et.load(exp_root)
    best = et.best_fixed(data["noisy"])
    assert best.label == "kl"
    assert best.valid_auc == pytest.approx(np.mean(_aucs("noisy", "methods", "kl")[1]))
    fixed_test = {m: np.mean(_aucs("noisy", "methods", m)[0]) for m in ("ce", "focal", "kl")}
    assert max(fixed_test, key=fixed_test.__getitem__) == "focal"  # test would pick focal
    assert et.best_fixed(data["clean"]).label == "ce"
    family = et.primary_family("noisy", data["noisy"], "reweight")
    assert [c.against for c in family.comparisons] == ["ce", "kl", "ce [cemeta]"]


def test_holm_over_exactly_the_three_primary_comparisons(
    et: ModuleType, exp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = [
        _p("noisy", ("methods", "reweight"), ("methods", "ce")),
        _p("noisy", ("methods", "reweight"), ("methods", "kl")),
        _p("noisy", ("methods", "reweight"), ("cemeta", "ce")),
    ]
    family = et.primary_family("noisy", et.load(exp_root)["noisy"], "reweight")
    assert [c.p for c in family.comparisons] == pytest.approx(raw, rel=1e-9)
    assert [c.holm_p for c in family.comparisons] == pytest.approx(holm(raw), rel=1e-9)
    out = _run(et, capsys, exp_root, "--primary", "reweight")
    noisy = out.split("### noisy", 1)[1]
    primary = _rows(noisy, et.PRIMARY_HEADING)
    assert list(primary) == [
        "reweight vs ce",
        "reweight vs best fixed loss (kl)",
        "reweight vs ce [cemeta]",
    ]
    for row, p, p_holm in zip(primary.values(), raw, holm(raw)):
        assert row[0] == str(len(SEEDS))
        assert row[2:4] == [et.fmt_p(p), et.fmt_p(p_holm)]
        assert row[4] in ("better", "worse", "no difference")
    # ce is the best fixed loss of "clean": said, still one of the family; cemeta is missing
    clean = et.primary_family("clean", et.load(exp_root)["clean"], "reweight")
    vs_ce, vs_best, vs_control = clean.comparisons
    assert vs_best.label == "reweight vs best fixed loss (ce: the same comparison as vs ce)"
    assert vs_best.p == vs_ce.p and vs_ce.holm_p == pytest.approx(holm([vs_ce.p, vs_ce.p])[0])
    assert (vs_control.n, vs_control.verdict, math.isnan(vs_control.holm_p)) == (0, "missing", True)


def test_every_other_row_is_exploratory_with_its_own_holm(
    et: ModuleType, exp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(et, capsys, exp_root, "--primary", "reweight")
    noisy = out.split("### noisy", 1)[1].split("\n### ", 1)[0]
    full = _rows(noisy, "#### All methods vs ce")
    exploratory = [
        ("methods", "focal"),
        ("methods", "kl"),
        ("methods", "uniform"),
        ("methods", "slf"),
        ("cemeta", "ce"),
    ]
    names = [m if v == "methods" else f"{m} [{v}]" for v, m in exploratory]
    assert set(full) == {"ce", "reweight (primary)", *(f"{n} (exploratory)" for n in names)}
    raw = [_p("noisy", vm, ("methods", "ce")) for vm in exploratory]
    for name, p_holm in zip(names, holm(raw)):
        assert full[f"{name} (exploratory)"][4] == f"{p_holm:.3f}"
    runs = et.load(exp_root)["noisy"]
    family = et.primary_family("noisy", runs, "reweight")
    assert full["reweight (primary)"][4] == f"{family.comparisons[0].holm_p:.3f}"
    # the numbers: Holm over the five exploratory rows, not over them and the primary's
    adjusted = {row[0]: p_holm for row, p_holm in et.full_rows(runs, family.comparisons[0])}
    assert [adjusted[n] for n in names] == pytest.approx(holm(raw), rel=1e-9)
    assert adjusted["reweight"] == family.comparisons[0].holm_p
    assert math.isnan(adjusted["ce"])
    assert "Best fixed loss (by mean validation AUC" in noisy and ": kl (mean valid AUC" in noisy


def test_json_holds_the_primary_comparisons_and_development_apart(
    et: ModuleType, exp_root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "out" / "primary.json"
    path.parent.mkdir()
    argv = (exp_root, "--primary", "reweight", "--development", "clean", "--json", path)
    out = _run(et, capsys, *argv)
    doc = json.loads(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == ["primary.json"]  # no temporary left
    assert (doc["primary"], list(doc["conditions"]), list(doc["development"])) == (
        "reweight",
        ["noisy"],
        ["clean"],
    )
    noisy = doc["conditions"]["noisy"]
    assert noisy["best_fixed_loss"]["label"] == "kl"
    family = et.primary_family("noisy", et.load(exp_root)["noisy"], "reweight")
    for got, want in zip(noisy["comparisons"], family.comparisons):
        assert set(got) == {"label", "against", "n", "mean_diff", "ci95", "p", "holm_p", "verdict"}
        assert (got["label"], got["n"], got["verdict"]) == (want.label, 4, want.verdict)
        assert [got[k] for k in ("mean_diff", "ci95", "p", "holm_p")] == pytest.approx(
            [want.mean, want.ci, want.p, want.holm_p]
        )
    d = np.subtract(_aucs("noisy", "methods", "reweight")[0], _aucs("noisy", "methods", "kl")[0])
    assert noisy["comparisons"][1]["mean_diff"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    assert noisy["comparisons"][1]["ci95"] == pytest.approx(half)
    missing = doc["development"]["clean"]["comparisons"][2]
    assert (missing["n"], missing["p"], missing["verdict"]) == (0, None, "missing")
    # the development condition comes after the evidence, under its own heading
    assert out.index("### noisy") < out.index(et.DEVELOPMENT_HEADING) < out.index("### clean")


def test_without_primary_the_table_is_unchanged(
    et: ModuleType, exp_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(et, capsys, exp_root)
    assert "(exploratory)" not in out and "Primary" not in out
    rows = _rows(out, "### noisy")
    others = [("methods", m) for m in GRID["noisy"]["methods"] if m != "ce"] + [("cemeta", "ce")]
    raw = [_p("noisy", vm, ("methods", "ce")) for vm in others]
    names = [m if v == "methods" else f"{m} [{v}]" for v, m in others]
    assert set(rows) == {"ce", *names}
    for name, p, p_holm in zip(names, raw, holm(raw)):  # Holm over every row, the primary's too
        assert rows[name][3:5] == [f"{p:.3f}", f"{p_holm:.3f}"]
    with pytest.raises(SystemExit):
        et.main([str(exp_root), "--json", "x.json"])  # --json needs --primary
