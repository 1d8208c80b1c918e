"""report.html in words: the summary at the top, the grid and base configuration, and figures
that say what they show (darts' single panel, distinguishable lines, τ on its own axis)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.experiments.compare import finish_experiment
from autoloss.experiments.tables import ConditionSummary, paired_differences, summarize
from autoloss.report import contents, plots
from autoloss.report.policy_map import PolicyMap, favourites, prediction_grid
from autoloss.report.records import curve_from_records, probability_keys, read_metrics
from experiments.fake_runs import CANDIDATES, write_fake_experiment


def _text(html: str) -> str:
    """The page without its images and tags, whitespace collapsed."""
    html = re.sub(r'src="data:image/png;base64,[^"]+"', "", html)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _rows(offsets: dict[str, float], noise: float, seeds: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.01, seeds)  # what a seed does to every method alike
    return [
        {
            "model": "deepfm",
            "method": m,
            "seed": s,
            "test_auc": 0.8 + d + shared[s] + float(rng.normal(0, noise)),
            "test_logloss": 0.4,
        }
        for m, d in offsets.items()
        for s in range(seeds)
    ]


def _sentences(rows: list[dict]) -> str:
    summary = summarize(rows)
    diffs = paired_differences([ConditionSummary({}, summary)], "ce")
    (text,) = contents.winner_sentences(summary, diffs, "ce", task="binary")
    return text


def test_winner_sentence_says_whether_the_lead_is_beyond_seed_noise() -> None:
    clear = _sentences(_rows({"ce": 0.0, "darts": 0.001, "autoloss": 0.01}, noise=0.0005))
    assert "`autoloss` has the highest mean test AUC" in clear
    assert "runner-up `darts`" in clear and "Against `ce`" in clear
    assert clear.count("beyond seed noise") == 2 and "within" not in clear

    tie = _sentences(_rows({"ce": 0.0, "darts": 0.0, "autoloss": 0.0005}, noise=0.005))
    assert tie.count("within seed noise") >= 1 and "beyond" not in tie

    ce_wins = _sentences(_rows({"ce": 0.01, "autoloss": 0.0}, noise=0.0005))
    assert "`ce` has the highest" in ce_wins and "runner-up `autoloss`" in ce_wins
    assert "Against" not in ce_wins  # the runner-up comparison is the one against ce

    gce_wins = _sentences(
        _rows({"ce": 0.0, "gce": 0.01, "uniform": 0.009, "autoloss": -0.01}, 5e-4)
    )
    assert "`gce` has the highest" in gce_wins and "Against `ce`" in gce_wins
    assert "`autoloss` against `ce`: Δ -0.0" in gce_wins  # where AutoLoss stands, whatever won
    assert gce_wins.count("beyond seed noise") == 2 and "within seed noise" in gce_wins

    one_seed = _sentences(_rows({"ce": 0.0, "autoloss": 0.01}, noise=0.0, seeds=1))
    assert "cannot be tested" in one_seed and "1 seed)" in one_seed


def _map(alpha_pos: list[float], alpha_neg: list[float] | None = None) -> PolicyMap:
    grid = prediction_grid(11)
    pos = np.tile(np.array(alpha_pos), (len(grid), 1))
    neg = np.tile(np.array(alpha_neg or [0.25] * 4), (len(grid), 1))
    return PolicyMap(grid, {0: neg, 1: pos}, list(CANDIDATES), "binary")


def test_policy_sentence_names_the_favourites_and_the_seeds_agreement() -> None:
    agree = contents.policy_sentence(
        "deepfm with autoloss",
        [_map([0.6, 0.2, 0.1, 0.1]), _map([0.55, 0.25, 0.1, 0.1])],
        [2021, 2022],
    )
    assert "positives: `focal` gets the most α (mean 0.5" in agree
    assert "negatives: no preference (every α within 0.05 of uniform, 0.25)" in agree
    assert "The 2 seeds agree" in agree and "disagree" not in agree

    disagree = contents.policy_sentence(
        "deepfm with autoloss",
        [_map([0.8, 0.1, 0.05, 0.05]), _map([0.1, 0.8, 0.05, 0.05])],
        [2021, 2022],
    )
    assert "(2 seeds): the seeds disagree: the std of α across them reaches 0.35" in disagree
    assert "seed 2021 `focal`, 2022 `kl`" in disagree
    assert disagree.index("disagree") < disagree.index("Their mean map")  # no confident mean first

    assert "One seed" in contents.policy_sentence("x", [_map([0.7, 0.1, 0.1, 0.1])], [1])
    flat = contents.policy_sentence("x", [_map([0.26, 0.25, 0.25, 0.24])] * 2, [1, 2])
    assert "no preference learnt (every α within 0.05 of uniform, 0.25, for every label)" in flat


def test_favourite_changes_along_the_prediction() -> None:
    grid = prediction_grid(11)
    neg = np.where(grid[:, None] <= 0.3, [0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1])
    pm = PolicyMap(grid, {0: neg, 1: np.full((11, 4), 0.25)}, list(CANDIDATES), "binary")
    f = favourites(pm)[0]
    assert [s[0] for s in f.segments] == ["hinge", "focal"]
    text = contents.policy_sentence("m", [pm], [1])
    assert (
        "negatives: `focal` gets the most α (mean" in text
        and "`hinge` for ŷ ≤ 0.21, `focal` above" in text
    )


def test_experiment_report_starts_with_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp", models=("deepfm",), methods=("ce", "darts", "autoloss"), seeds=(1, 2, 3)
    )
    for run in exp.plan():
        if run.method == "autoloss":
            (run.run_dir / "controller.pt").write_bytes(b"fake")
    # three seeds that favour different candidates for positives
    favours = {1: [0.8, 0.1, 0.05, 0.05], 2: [0.1, 0.8, 0.05, 0.05], 3: [0.05, 0.05, 0.8, 0.1]}

    def fake_map(path: Path, points: int = 99) -> PolicyMap:
        seed = int(re.search(r"-s(\d+)", path.parent.name).group(1))  # type: ignore[union-attr]
        return _map(favours[seed])

    monkeypatch.setattr(contents, "compute_policy_map", fake_map)
    finish_experiment(exp)
    assert main(["report", str(exp.out)]) == 0
    html = (exp.out / "report" / "report.html").read_text()
    text = _text(html)
    assert (
        html.index("<h2>In short</h2>") < html.index("<h2>Setup</h2>") < html.index("Test metrics")
    )
    assert "deepfm : autoloss has the highest mean test AUC" in text
    assert "deepfm with autoloss (3 seeds): the seeds disagree" in text
    assert "the seeds disagree" in text
    assert (exp.out / "report" / "policy_map_deepfm-autoloss.png").is_file()


def _base_block(html: str) -> str:
    tail = html[html.index("<h2>Grid and base configuration</h2>") :]
    return tail[tail.index("<pre>") : tail.index("</pre>")]


def test_grid_and_base_configuration_show_what_varies(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp",
        models=("deepfm", "ipnn"),
        methods=("ce", "autoloss"),
        seeds=(2021, 2022),
        grid=[("data.label_noise", [0.0, 0.2])],
    )
    finish_experiment(exp)
    assert main(["report", str(exp.out)]) == 0
    html = (exp.out / "report" / "report.html").read_text()
    assert "Base configuration</h2>" not in html.replace("Grid and base configuration</h2>", "")
    text = _text(html[html.index("<h2>Grid and base configuration</h2>") :])
    for line in (
        "deepfm, ipnn",
        "ce, autoloss",
        "2021, 2022",
        "data.label_noise 0, 0.2",
        "16 runs",
    ):
        assert line in text, line
    base = _base_block(html)
    for per_run in ("name: deepfm", "method:", "seed: 2021", "label_noise:", "\nout:"):
        assert per_run not in base, per_run
    assert "embed_dim: 16" in base and "candidates:" in base  # what the runs share stays
    assert "[label_noise=0.2] deepfm :" in _text(html)  # the summary per condition


def _png_width(path: Path) -> int:
    return int(struct.unpack(">I", path.read_bytes()[16:20])[0])


def test_darts_gets_one_panel_with_distinguishable_lines(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp", models=("deepfm",), methods=("ce", "darts", "autoloss"), seeds=(1, 2)
    )
    for run in exp.plan():  # darts: one weight vector, the per-class records repeat it
        if run.method == "darts":
            path = run.run_dir / "metrics.jsonl"
            recs = [json.loads(line) for line in path.read_text().splitlines()]
            for r in recs:
                for k in [k for k in r if re.fullmatch(r"p_\w+_y\d", k)]:
                    r[k] = r[k[: k.rindex("_y")]]
            path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    finish_experiment(exp)
    assert main(["report", str(exp.out)]) == 0
    out = exp.out / "report"
    darts = out / "candidate_probabilities_deepfm-darts.png"
    autoloss = out / "candidate_probabilities_deepfm-autoloss.png"
    assert _png_width(darts) < 1000 < _png_width(autoloss)  # one panel against two

    _, policy = read_metrics(exp.plan()[1].run_dir / "metrics.jsonl")
    curve = curve_from_records(policy)
    assert contents.shares_weights(curve, CANDIDATES)
    overall, _ = probability_keys(curve, CANDIDATES)
    fig = plots.candidate_evolution(curve, overall, {}, title="t", shared=True)
    (ax,) = fig.axes
    assert "one weight vector" in ax.get_title()
    styles = {(str(ln.get_linestyle()), ln.get_marker()) for ln in ax.get_lines()}
    assert len(styles) == len(CANDIDATES)  # no two candidates drawn alike


def test_tau_has_its_own_labelled_axis_on_the_right(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp", models=("deepfm",), methods=("autoloss",), seeds=(1,)
    )
    _, policy = read_metrics(exp.plan()[0].run_dir / "metrics.jsonl")
    curve = curve_from_records(policy)
    overall, per_class = probability_keys(curve, CANDIDATES)
    assert not contents.shares_weights(curve, CANDIDATES)
    fig = plots.candidate_evolution(curve, overall, per_class, title="t")
    prob, right, twin = fig.axes[0], fig.axes[1], fig.axes[2]
    assert "τ" in twin.get_ylabel() and twin.yaxis.get_label_position() == "right"
    assert [ln.get_label() for ln in prob.get_lines()] == list(CANDIDATES)  # τ is not among them
    assert np.allclose(twin.get_lines()[0].get_ydata(), curve.values["tau"])
    assert "positives" in right.get_title()
