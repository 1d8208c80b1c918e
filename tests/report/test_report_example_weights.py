"""The report's per-example weights (``example_weights.npz`` of ``reweight`` runs): the figure,
its sentence, and the sections of the run and experiment reports."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.experiments.compare import finish_experiment
from autoloss.policies.reweight import OFF
from autoloss.report import plots
from autoloss.report.contents import example_weights_sentence, read_example_weights
from autoloss.train.rundir import RunDir
from experiments.fake_runs import planned, write_fake_experiment, write_fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEADING = "<h2>Per-example weights</h2>"
# what fabricate() makes of its 2000 rows with flips known
FLIPS_SENTENCE = (
    "Flipped rows get a mean weight of 0.30 against 1.12 for clean rows; 40% of flipped rows and"
    " 3% of clean rows are switched off (weight < 0.1)."
)


def fabricate(
    n: int = 2000, *, knows_flips: bool = True, classes: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """The arrays of an example_weights.npz: a fifth of the rows flipped, with lower weights
    (0.30 on average, 40% at zero) than the clean ones (1.117 on average, 3% at 0.05)."""
    rng = np.random.default_rng(seed)
    n_flipped = n // 5
    flipped = np.arange(n) < n_flipped
    weight = np.full(n, 1.15, dtype=np.float32)
    weight[n_flipped : n_flipped + (n - n_flipped) * 3 // 100] = 0.05
    weight[:n_flipped] = 0.5
    weight[: n_flipped * 2 // 5] = 0.0
    low, high = rng.uniform(0, 0.4, n), rng.uniform(0.3, 1, n)
    candidates = np.array(["focal", "kl", "hinge", "ce"])
    return {
        "prediction": np.where(flipped, low, high).astype(np.float32),
        "label": rng.integers(0, classes, n).astype(np.int32),
        "flipped": flipped if knows_flips else np.zeros(n, dtype=bool),
        "knows_flips": np.array(knows_flips),
        "weight": weight,
        "candidate_weights": np.repeat(weight[:, None] / len(candidates), len(candidates), 1),
        "candidates": candidates,
    }


def _write(run_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    path = RunDir(run_dir).example_weights
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _legend(ax: Any) -> list[str]:
    legend = ax.get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def _points(ax: Any) -> np.ndarray:
    """The scatter's points (the panel's first collection)."""
    return np.asarray(ax.collections[0].get_offsets())


def _pngs(page: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


def _report(path: Path) -> str:
    assert main(["report", str(path)]) == 0
    return (path / "report" / "report.html").read_text()


def test_the_threshold_of_switched_off_rows_is_that_of_the_policy() -> None:
    assert plots.WEIGHT_OFF == OFF


@pytest.mark.parametrize(("classes", "panels"), [(2, 2), (5, 1)])
def test_figure_has_a_panel_per_binary_label_or_one_for_all_classes(
    classes: int, panels: int
) -> None:
    fig = plots.example_weights_figure(fabricate(classes=classes), title="weights")
    assert len(fig.axes) == panels
    titles = [ax.get_title() for ax in fig.axes]
    if classes == 2:
        assert titles[0].startswith("given label 1 (positives)")
        assert titles[1].startswith("given label 0 (negatives)")
    else:
        assert titles == ["all classes: 2,000 rows"]
    for ax in fig.axes:
        legend = _legend(ax)
        assert any(t.startswith("clean (") for t in legend)
        assert any(t.startswith("flipped (") for t in legend)
        assert ax.get_xlim() == (0.0, 1.0)
        assert len(_points(ax)) <= 1500  # half the panel's scatter each


def test_figure_without_known_flips_draws_all_rows_together() -> None:
    fig = plots.example_weights_figure(fabricate(knows_flips=False), title="weights")
    for ax in fig.axes:
        legend = _legend(ax)
        assert len(legend) == 2 and legend[1].startswith("all rows (")  # and the line at 1
    # the scatter is a seeded subsample: at most ~3000 points per panel, the same each time
    many = fabricate(n=20_000, knows_flips=False)
    a, b = (plots.example_weights_figure(many, title="w") for _ in range(2))
    points = [_points(ax) for ax in a.axes]
    assert all(len(p) == 3000 for p in points)
    assert np.array_equal(points[0], _points(b.axes[0]))


def test_sentences() -> None:
    assert example_weights_sentence(fabricate()) == FLIPS_SENTENCE
    arrays = fabricate(knows_flips=False)
    label, w = arrays["label"], arrays["weight"]
    text = example_weights_sentence(arrays)
    pos, neg = w[label == 1], w[label == 0]
    assert text.startswith(
        f"Positives get a mean weight of {pos.mean():.2f} against {neg.mean():.2f} for negatives; "
    )
    assert f"{np.mean(pos < 0.1):.0%} of positives and" in text
    assert "flipped" not in example_weights_sentence(fabricate(knows_flips=False, classes=5))
    assert plots.share_text(0.0) == "0%" and plots.share_text(0.001) == "<1%"
    assert plots.share_text(0.998) == ">99%" and plots.share_text(1.0) == "100%"


def test_run_report_shows_the_weights_of_a_run_that_wrote_them(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    write_fake_run(rd, method="reweight")
    _write(rd, fabricate())
    page = _report(rd)
    png = rd / "report" / "example_weights.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    assert HEADING in page and png.read_bytes() in _pngs(page)
    assert FLIPS_SENTENCE in html.unescape(page)
    assert page.index(HEADING) < page.index("<h2>Configuration</h2>")


def test_run_report_without_the_file_has_no_such_section(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    write_fake_run(rd, method="autoloss")
    page = _report(rd)
    assert "Per-example weights" not in page and "switched off" not in page
    assert not (rd / "report" / "example_weights.png").exists()


def test_an_unreadable_file_is_a_note_not_a_failure(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    write_fake_run(rd, method="reweight")
    RunDir(rd).example_weights.write_bytes(b"not a zip file")
    page = _report(rd)
    assert HEADING in page and "skipped: cannot read example_weights.npz" in page
    assert not (rd / "report" / "example_weights.png").exists()
    arrays = fabricate()
    arrays["weight"] = arrays["weight"][:10]
    assert "different shapes" in str(read_example_weights(_write(rd, arrays)))


def test_experiment_report_shows_the_first_seed_with_a_sample_per_cell(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp", models=("deepfm",), methods=("ce", "reweight"), seeds=(1, 2, 3)
    )
    finish_experiment(exp)
    before = _report(exp.out)
    assert "Per-example weights" not in before

    # seed 1 wrote none (e.g. an older run): seed 2's sample is the cell's, not seed 3's
    _write(planned(exp, "deepfm", "reweight", 2).run_dir, fabricate())
    _write(planned(exp, "deepfm", "reweight", 3).run_dir, fabricate(knows_flips=False))
    page = _report(exp.out)
    out = exp.out / "report"
    assert [p.name for p in out.glob("example_weights*.png")] == [
        "example_weights_deepfm-reweight.png"
    ]
    assert HEADING in page
    assert (out / "example_weights_deepfm-reweight.png").read_bytes() in _pngs(page)
    text = html.unescape(page)
    assert f"<b>deepfm with reweight</b> (seed 2): {FLIPS_SENTENCE}" in text
    assert "Positives get" not in text  # seed 3's sample is not shown
    assert page.index("<h2>Policy maps</h2>") < page.index(HEADING) < page.index("All runs")
    # the rest of the page is as it was
    section = page[page.index(HEADING) : page.index("<h2>All runs</h2>")]
    assert page.replace(section, "") == before


def test_experiment_report_with_conditions_names_each_cell_by_its_condition(
    tmp_path: Path,
) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp",
        models=("deepfm",),
        methods=("ce", "reweight"),
        seeds=(1,),
        grid=[("data.label_noise", [0.0, 0.2])],
    )
    finish_experiment(exp)
    noisy = next(
        r for r in exp.plan() if r.method == "reweight" and dict(r.condition)["data.label_noise"]
    )
    _write(noisy.run_dir, fabricate())
    page = html.unescape(_report(exp.out))
    out = exp.out / "report"
    (png,) = out.glob("example_weights*.png")
    assert png.name == "example_weights_deepfm-reweight_label_noise=0.2.png"
    assert f"<b>deepfm with reweight [label_noise=0.2]</b> (seed 1): {FLIPS_SENTENCE}" in page
    assert page.count(HEADING) == 1
