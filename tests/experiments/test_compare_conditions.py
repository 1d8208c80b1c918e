"""``autoloss compare --grid``: conditions as a grid dimension, their names, tables and checks."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

import autoloss.train.run as run_mod
from autoloss.cli import main
from autoloss.errors import ConfigError
from autoloss.experiments.compare import (
    experiment_from_config,
    finish_experiment,
    prepare_experiment,
)
from autoloss.experiments.grid import parse_grid
from autoloss.experiments.tables import BEST_FIXED_MARK, REQUIRED_COLUMNS, fmt_p, read_results_csv
from autoloss.train.config import RunConfig
from autoloss.train.rundir import RunDir
from experiments.fake_runs import write_fake_experiment

TINY = ["--epochs", "1", "--max-steps", "3", "--batch-size", "256", "--embed-dim", "4", "--mlp", "8",
        "--progress", "off", "--device", "cpu", "--threads", "1"]  # fmt: skip
SUMMARY = "## Summary across conditions: test AUC difference to"


def _section_rows(table_md: str, heading: str) -> list[list[str]]:
    block = table_md.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _header(table_md: str, heading: str) -> list[str]:
    block = table_md.split(heading, 1)[1]
    line = next(ln for ln in block.splitlines() if ln.startswith("|"))
    return [c.strip() for c in line.strip("|").split("|")]


def _holm_by_loop(p: list[float]) -> list[float]:
    """Holm written out the long way: adj(i) = max over j <= rank(i) of min(1, (m - j) p_(j))."""
    finite = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(finite)
    out = [math.nan] * len(p)
    for rank, (_, i) in enumerate(finite):
        out[i] = max(min(1.0, (m - j) * finite[j][0]) for j in range(rank + 1))
    return out


def _diff_cell(cell: str) -> tuple[float, float]:
    mean, _, half = cell.partition(" ± ")
    return float(mean), float(half) if half else math.nan


class TrainCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        original = run_mod.train_run

        def counted(cfg: RunConfig, **kw: Any) -> Any:
            self.calls.append(str(cfg.out))
            return original(cfg, **kw)

        monkeypatch.setattr(run_mod, "train_run", counted)


# ---------------------------------------------------------------------------------- syntax
def test_parse_grid_values_commas_semicolons_and_repeats() -> None:
    assert parse_grid(["data.label_noise=0,0.2, 0.4"]) == [
        ("data.label_noise", ["0", "0.2", "0.4"])
    ]
    assert parse_grid(["data.noise_mode=symmetric;pos2neg"]) == [
        ("data.noise_mode", ["symmetric", "pos2neg"])
    ]
    # a list setting: ',' belongs to a value, ';' separates values; repeating a key adds values
    assert parse_grid(["loss.candidates=focal,kl;focal,kl,hinge,ce"]) == [
        ("loss.candidates", ["focal,kl", "focal,kl,hinge,ce"])
    ]
    assert parse_grid(["loss.candidates=ce,focal"]) == [("loss.candidates", ["ce,focal"])]
    assert parse_grid(["model.mlp=64,64", "data.pos_rate=null,0.1", "model.mlp=128"]) == [
        ("model.mlp", ["64,64", "128"]),
        ("data.pos_rate", ["null", "0.1"]),
    ]
    for bad in ("data.label_noise", "=0,1", "data.label_noise=0,,0.2", "loss.candidates=ce;"):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid([bad])


def test_grid_values_are_checked_and_name_the_runs(tiny_dataset: Path, tmp_path: Path) -> None:
    base = RunConfig()
    base.data.path = str(tiny_dataset)

    def exp_of(*items: str, **kw: Any) -> Any:
        return experiment_from_config(
            base, tmp_path / "e", models=["deepfm"], methods=["ce"], num_seeds=1,
            grid=parse_grid(list(items)), **kw,
        )  # fmt: skip

    two = exp_of("data.label_noise=0.2,0", "data.noise_mode=symmetric,pos2neg")
    assert two.grid == [("data.label_noise", [0.2, 0.0]), ("data.noise_mode", ["symmetric", "pos2neg"])]  # fmt: skip
    assert [r.name for r in two.plan()] == [
        "deepfm-ce-s2021-label_noise=0.2-noise_mode=symmetric",
        "deepfm-ce-s2021-label_noise=0.2-noise_mode=pos2neg",
        "deepfm-ce-s2021-label_noise=0-noise_mode=symmetric",
        "deepfm-ce-s2021-label_noise=0-noise_mode=pos2neg",
    ]
    cfg = two.plan()[1].config(two.base)
    assert (cfg.data.label_noise, cfg.data.noise_mode, cfg.train.seed) == (0.2, "pos2neg", 2021)
    lists = exp_of("model.mlp=64,64;128", "loss.candidates=ce,focal", "data.pos_rate=null,0.25")
    assert lists.plan()[0].name == "deepfm-ce-s2021-mlp=64+64-candidates=ce+focal-pos_rate=null"
    assert lists.plan()[0].config(lists.base).model.mlp == [64, 64]
    assert lists.plan()[-1].config(lists.base).data.pos_rate == 0.25
    # keys with the same last part keep their full name; odd characters are made file-name safe
    same = exp_of("optim.lr=0.01", "model.extra.lr=0.5", "model.act=a/b")
    assert same.plan()[0].name == "deepfm-ce-s2021-optim.lr=0.01-model.extra.lr=0.5-act=a_b"
    # without --grid: the names of before (finished experiments resume)
    assert [r.name for r in exp_of().plan()] == ["deepfm-ce-s2021"]

    for items, match in [
        (["data.nope=1,2"], "unknown setting 'data.nope'"),
        (["data.label_noise=0,1.5"], r"data.label_noise.*\[0, 1\)"),
        (["data.noise_mode=symmetric,sideways"], "noise_mode"),
        (["model.mlp=64;abc"], "model.mlp"),
        (["model.name=deepfm,ipnn"], "use --models"),
        (["loss.method=ce"], "use --methods"),
        (["train.seed=1,2"], "use --seed"),
        (["train.progress=on,off"], "does not change"),
        (["data.label_noise=0,0.0"], "listed twice"),
        (["model.act=a/b;a_b"], "same run name"),
    ]:
        with pytest.raises(ConfigError, match=match):
            exp_of(*items)
    with pytest.raises(ConfigError, match="listed twice"):
        experiment_from_config(
            base, tmp_path / "e", grid=[("data.label_noise", [0]), ("data.label_noise", [0.1])]
        )


def test_grid_errors_are_one_line_and_create_nothing(
    tiny_dataset: Path,
    tiny_multiclass_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exp"
    argv = ["compare", "--models", "deepfm", "--methods", "ce", "--out", str(out), *TINY]
    for data, grid, words in [
        (tiny_dataset, "data.label_noise=0,1.5", ["data.label_noise"]),
        (tiny_dataset, "data.label_noise", ["--grid", "KEY=V1"]),
        (tiny_dataset, "nope.key=1", ["nope.key"]),
        # values the data cannot meet fail before any run: pos_rate is binary only, and the
        # tiny test split would keep too few positives
        (tiny_multiclass_dataset, "data.pos_rate=null,0.3", ["pos_rate=0.3"]),
        (tiny_dataset, "data.pos_rate=null,0.1", ["pos_rate=0.1", "positives"]),
    ]:
        assert main([*argv, "--data", str(data), "--grid", grid]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words), err
        assert not out.exists()


# ---------------------------------------------------------------------------------- end to end
@pytest.mark.e2e
def test_compare_grid_end_to_end_tables_resume_and_changed_grid(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exp = tmp_path / "exp"
    argv = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods", "ce,uniform",
            "--seeds", "2", "--seed", "7", "--grid", "data.label_noise=0,0.3", "--out", str(exp),
            *TINY]  # fmt: skip
    counter = TrainCounter(monkeypatch)
    assert main(argv) == 0
    assert len(counter.calls) == 8
    assert "8 runs (1 models × 2 methods × 2 seeds × 2 conditions)" in capsys.readouterr().out
    names = {p.name for p in (exp / "runs").iterdir() if p.is_dir()}
    assert names == {
        f"deepfm-{m}-s{s}-label_noise={v}" for m in ("ce", "uniform") for s in (7, 8) for v in ("0", "0.3")
    }  # fmt: skip
    noisy = exp / "runs" / "deepfm-ce-s7-label_noise=0.3"
    assert yaml.safe_load((noisy / "config.yaml").read_text())["data"]["label_noise"] == 0.3
    assert json.loads((noisy / "result.json").read_text())["conditions"]["flips"]["train"] > 0
    clean = json.loads((exp / "runs" / "deepfm-ce-s7-label_noise=0" / "result.json").read_text())
    assert "conditions" not in clean  # condition off: the dataset as it is
    meta = yaml.safe_load((exp / "experiment.yaml").read_text())
    assert meta["grid"] == [{"key": "data.label_noise", "values": [0.0, 0.3]}]

    # results.csv: the required columns first, then the condition and a column per grid key
    header = (exp / "results.csv").read_text().splitlines()[0].split(",")
    assert tuple(header[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert header[-2:] == ["condition", "data.label_noise"]
    rows = read_results_csv(exp / "results.csv")
    assert sorted((r["condition"], r["data.label_noise"], r["method"], r["seed"]) for r in rows) == sorted(
        (f"label_noise={t}", v, m, s)
        for t, v in (("0", 0.0), ("0.3", 0.3)) for m in ("ce", "uniform") for s in (7, 8)
    )  # fmt: skip

    # table.md: the summary across conditions, then a section per condition
    table = (exp / "table.md").read_text()
    assert "conditions (`--grid`): `data.label_noise` = 0, 0.3" in table
    assert table.index(SUMMARY) < table.index("## Condition label_noise=0\n")
    assert table.index("## Condition label_noise=0\n") < table.index(
        "## Condition label_noise=0.3\n"
    )
    for cond in ("label_noise=0", "label_noise=0.3"):
        section = table.split(f"## Condition {cond}\n", 1)[1]
        sig = _section_rows(section, "### Mean ± std and significance")
        assert [(r[0], r[1].replace(BEST_FIXED_MARK, ""), r[2]) for r in sig] == [
            ("deepfm", "ce", "2"),
            ("deepfm", "uniform", "2"),
        ]
        assert "### Efficiency" in section.split("\n## ", 1)[0]
    _check_summary(
        table, pd.read_csv(exp / "results.csv"), key="label_noise", col="data.label_noise"
    )

    # a second invocation trains nothing and leaves the finished runs alone
    before = {p: p.stat().st_mtime_ns for p in exp.glob("runs/*/result.json")}
    assert main(argv) == 0
    assert len(counter.calls) == 8
    assert {p: p.stat().st_mtime_ns for p in exp.glob("runs/*/result.json")} == before
    capsys.readouterr()

    # other grid values, another grid key, or none: refused (one line), nothing touched
    for grid in (["--grid", "data.label_noise=0,0.2"], ["--grid", "data.noise_mode=symmetric"], []):
        other = [a for a in argv if a not in ("--grid", "data.label_noise=0,0.3")] + grid
        assert main(other) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "other settings (grid:" in err and "--overwrite" in err
    assert len(counter.calls) == 8 and len(list(exp.glob("runs/*/result.json"))) == 8

    # the report: the difference figure, written and embedded, with its sentence of reading
    assert main(["report", str(exp)]) == 0
    html = (exp / "report" / "report.html").read_text()
    png = exp / "report" / "grid_auc_difference.png"
    assert png.is_file() and png.stat().st_size > 5000
    assert "Conditions: test AUC difference to ce" in html and "dashed zero line" in html
    assert html.count("data:image/png;base64,") == len(list((exp / "report").glob("*.png")))
    assert (exp / "report" / "learning_curves_deepfm_label_noise=0.3.png").is_file()

    # --overwrite with another grid deletes the runs made with the old one
    cfg = RunConfig()
    cfg.data.path = str(tiny_dataset)
    changed = experiment_from_config(
        cfg, exp, models=["deepfm"], methods=["ce"], num_seeds=1,
        grid=[("data.label_noise", ["0.1"])],
    )  # fmt: skip
    prepare_experiment(changed, overwrite=True)
    assert not (exp / "runs").exists() and not (exp / "results.csv").exists()
    assert yaml.safe_load((exp / "experiment.yaml").read_text())["grid"][0]["values"] == [0.1]


def _check_summary(
    table: str, df: pd.DataFrame, *, key: str, col: str, baseline: str = "ce"
) -> None:
    """Every summary row recomputed from results.csv: paired by seed with scipy, Holm by loop."""
    assert _header(table, SUMMARY)[-6:] == [
        "seeds paired",
        f"Δ test AUC vs {baseline} (mean ± 95% CI)",
        "paired p",
        "paired p (Holm)",
        "Welch p",
        "Welch p (Holm)",
    ]
    rows = _section_rows(table, SUMMARY)
    keys = [k for k in _header(table, SUMMARY) if k not in ("model", "method")][:-6]
    assert keys[0] == key
    want_paired, want_welch = [], []
    for row in rows:
        cond = dict(zip(keys, row))
        model, method, seeds, diff = row[len(keys) : len(keys) + 4]
        g = df[
            (df.model == model) & (df.condition == ", ".join(f"{k}={v}" for k, v in cond.items()))
        ]
        a = g[g.method == method].set_index("seed").test_auc.dropna()
        b = g[g.method == baseline].set_index("seed").test_auc.dropna()
        common = sorted(set(a.index) & set(b.index))
        left = len(set(a.index) ^ set(b.index))
        assert seeds == str(len(common)) + (f" ({left} left out)" if left else "")
        d = (a[common] - b[common]).to_numpy()
        mean, half = _diff_cell(diff)
        assert mean == pytest.approx(d.mean(), abs=5e-5)
        want_half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        assert half == pytest.approx(want_half, abs=5e-5)
        p_pair = stats.ttest_rel(a[common], b[common]).pvalue
        p_welch = stats.ttest_ind(a, b, equal_var=False).pvalue
        assert row[-4] == fmt_p(p_pair) and row[-2] == fmt_p(p_welch)
        want_paired.append(p_pair)
        want_welch.append(p_welch)
        if col:
            assert set(g[col]) and len(set(g[col])) == 1
    for i, (hp, hw) in enumerate(zip(_holm_by_loop(want_paired), _holm_by_loop(want_welch))):
        assert (rows[i][-3], rows[i][-1]) == (fmt_p(hp), fmt_p(hw))


# ---------------------------------------------------------------------------------- fabricated
def test_grid_tables_pair_seeds_and_apply_holm_over_the_whole_table(tmp_path: Path) -> None:
    grid = [("data.label_noise", [0.0, 0.2]), ("data.noise_mode", ["symmetric", "pos2neg"])]
    exp = write_fake_experiment(
        tmp_path / "exp",
        methods=("ce", "uniform", "autoloss"),
        seeds=(1, 2, 3, 4),
        grid=grid,
        shift=lambda r: -0.05 * dict(r.condition)["data.label_noise"] * (r.method == "ce"),
    )
    # a seed of autoloss missing under one condition, a seed of ce under another: left out
    (
        exp.out / "runs" / "deepfm-autoloss-s4-label_noise=0.2-noise_mode=pos2neg" / "result.json"
    ).unlink()
    (exp.out / "runs" / "ipnn-ce-s1-label_noise=0-noise_mode=symmetric" / "result.json").unlink()
    outcome = finish_experiment(exp)
    table = outcome.table
    df = pd.read_csv(exp.out / "results.csv")
    assert list(df.columns[-3:]) == ["condition", "data.label_noise", "data.noise_mode"]
    assert len(df) == 2 * 3 * 4 * 4 - 2
    rows = _section_rows(table, SUMMARY)
    assert len(rows) == 4 * 2 * 2  # conditions × models × methods other than ce
    assert _header(table, SUMMARY)[:4] == ["label_noise", "noise_mode", "model", "method"]
    _check_summary(table, df, key="label_noise", col="data.noise_mode")
    left = [r for r in rows if "left out" in r[4]]
    assert sorted((r[0], r[1], r[2], r[3], r[4]) for r in left) == [
        ("0", "symmetric", "ipnn", "autoloss", "3 (1 left out)"),
        ("0", "symmetric", "ipnn", "uniform", "3 (1 left out)"),
        ("0.2", "pos2neg", "deepfm", "autoloss", "3 (1 left out)"),
    ]
    assert "left out of the pairing" in table
    # the shifted baseline under noise: every method gains about 0.01 over ce there
    noisy = [_diff_cell(r[5])[0] for r in rows if r[0] == "0.2"]
    assert all(d > 0.005 for d in noisy)
    assert (
        table.count("\n## Condition ") == 4
        and "## Condition label_noise=0.2, noise_mode=pos2neg" in table
    )

    # no ce in the grid: the first method is the baseline; no grid: the paired section of one table
    plain = write_fake_experiment(tmp_path / "plain", models=("deepfm",), methods=("focal", "uniform", "slf"), seeds=(1, 2, 3))  # fmt: skip
    text = finish_experiment(plain).table
    heading = "## Paired differences to `focal` (test AUC)"
    assert heading in text and "Δ test AUC vs focal (mean ± 95% CI)" in text
    paired = _section_rows(text, heading)
    assert [r[1] for r in paired] == ["uniform", "slf"]
    by_loop = _holm_by_loop(
        [
            stats.ttest_rel(
                np.array([outcome_value(plain.out, m, s) for s in (1, 2, 3)]),
                np.array([outcome_value(plain.out, "focal", s) for s in (1, 2, 3)]),
            ).pvalue
            for m in ("uniform", "slf")
        ]
    )
    assert [r[5] for r in paired] == [fmt_p(p) for p in by_loop]


def outcome_value(out: Path, method: str, seed: int) -> float:
    result = RunDir(out / "runs" / f"deepfm-{method}-s{seed}").read_result()
    assert result is not None
    return result.metric("test", "auc")
