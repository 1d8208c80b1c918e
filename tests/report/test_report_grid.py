"""``autoloss report`` of an experiment with conditions (``compare --grid``): the difference figures."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from autoloss.cli import main
from autoloss.experiments.compare import finish_experiment
from autoloss.experiments.tables import ConditionSummary, paired_differences, summarize
from autoloss.report import plots
from experiments.fake_runs import write_fake_experiment, write_fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def test_report_of_a_grid_experiment_has_one_difference_figure_per_other_key(
    tmp_path: Path,
) -> None:
    grid = [("data.noise_mode", ["symmetric", "pos2neg"]), ("data.label_noise", [0.0, 0.3])]
    exp = write_fake_experiment(
        tmp_path / "exp",
        methods=("ce", "uniform"),
        seeds=(1, 2, 3),
        grid=grid,
        shift=lambda r: -0.1 * dict(r.condition)["data.label_noise"] * (r.method != "ce"),
    )
    finish_experiment(exp)
    assert main(["report", str(exp.out)]) == 0
    out = exp.out / "report"
    # x: the numeric key (label_noise), one figure per value of the other key (noise_mode)
    figures = sorted(p.name for p in out.glob("grid_auc_difference*.png"))
    assert figures == [
        "grid_auc_difference_noise_mode_pos2neg.png",
        "grid_auc_difference_noise_mode_symmetric.png",
    ]
    for name in figures:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC and (out / name).stat().st_size > 5000
    html = (out / "report.html").read_text()
    images = _pngs(html)
    assert len(images) == len(list(out.glob("*.png")))
    assert (out / figures[0]).read_bytes() in images  # embedded
    assert "Conditions: test AUC difference to ce" in html and "95% confidence interval" in html
    assert "Holm" in html and "seeds paired" in html
    for label in ("noise_mode=symmetric, label_noise=0", "noise_mode=pos2neg, label_noise=0.3"):
        assert f"<h2>Condition {label}</h2>" in html
    # figures of one condition's runs only, named after it
    assert (out / "learning_curves_ipnn_noise_mode=pos2neg-label_noise=0.3.png").is_file()
    assert "uses fixed weights" in html  # uniform, per condition: a note, no figure
    assert not (out / "metrics_by_method.png").exists()
    assert "<th>condition</th>" in html  # the table of all runs


def test_grid_figure_of_a_categorical_key_and_its_lines(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp",
        models=("deepfm",),
        methods=("focal", "autoloss"),
        seeds=(1, 2),
        grid=[("data.noise_mode", ["symmetric", "pos2neg", "neg2pos"])],
    )
    finish_experiment(exp)
    assert main(["report", str(exp.out)]) == 0
    assert (exp.out / "report" / "grid_auc_difference.png").is_file()
    html = (exp.out / "report" / "report.html").read_text()
    assert "Conditions: test AUC difference to focal" in html

    # the figure itself: categories on x, a zero line, one line per method with its CI
    rows = []
    for cond, label in (("symmetric", "noise_mode=symmetric"), ("pos2neg", "noise_mode=pos2neg")):
        for method, shift in (("ce", 0.0), ("slf", 0.01 if cond == "pos2neg" else 0.0)):
            for seed in (1, 2, 3):
                rd = tmp_path / "runs" / f"{cond}-{method}-{seed}"
                r = write_fake_run(rd, method=method, seed=seed, auc_shift=shift)
                rows.append({"model": "deepfm", "method": method, "seed": seed, "condition": label,
                             "test_auc": r["test"]["auc"], "test_logloss": 0.4})  # fmt: skip
    conds = [
        ConditionSummary({"noise_mode": v}, summarize([r for r in rows if r["condition"] == lb]))
        for v, lb in (("symmetric", "noise_mode=symmetric"), ("pos2neg", "noise_mode=pos2neg"))
    ]
    diffs = paired_differences(conds, "ce")
    fig = plots.grid_differences(
        diffs,
        models=["deepfm"],
        x_key="noise_mode",
        x_values=["symmetric", "pos2neg"],
        x_label="label noise mode",
        title="t",
    )
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["symmetric", "pos2neg"]
    assert ax.get_title() == "deepfm" and "vs ce" in ax.get_ylabel()
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["ce (zero difference)", "slf (3 seeds)"]
    line = next(ln for ln in ax.get_lines() if ln.get_marker() == "o")
    assert np.allclose(line.get_ydata(), [d.mean for d in diffs])
    assert diffs[1].mean > diffs[0].mean + 0.005  # the shifted condition
