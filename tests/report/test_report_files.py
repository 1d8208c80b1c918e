"""``autoloss report``: PNG files and a self-contained report.html for runs and experiments."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.experiments.compare import finish_experiment
from autoloss.report.records import curve_from_records, mean_curve, read_metrics
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from experiments.fake_runs import write_fake_experiment, write_fake_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def _check_files(out: Path, names: list[str]) -> str:
    for name in names:
        p = out / name
        assert p.is_file() and p.stat().st_size > 5000, name
        assert p.read_bytes()[:8] == PNG_MAGIC
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert 'src="http' not in html and "<script" not in html  # self-contained
    images = _pngs(html)
    assert all(img[:8] == PNG_MAGIC for img in images)
    return html


def test_report_of_a_fabricated_autoloss_run(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    write_fake_run(rd, method="autoloss")
    assert main(["report", str(rd)]) == 0
    html = _check_files(rd / "report", ["learning_curves.png", "candidate_probabilities.png"])
    assert len(_pngs(html)) == 2
    assert "controller.pt" in html  # the policy map is skipped with a note: no controller saved


def test_report_of_a_real_ce_run_skips_candidate_plots_with_a_note(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = RunConfig()
    cfg.data.path = str(tiny_dataset)
    for k, v in {"loss.method": "ce", "train.epochs": 2, "optim.batch_size": 500, "model.embed_dim": 4,
                 "model.mlp": [8], "train.progress": "off", "train.device": "cpu"}.items():  # fmt: skip
        cfg.set(k, v)
    cfg.out = str(tmp_path / "run")
    rd, _ = train_run(cfg, log=lambda s: None)
    out = tmp_path / "elsewhere"
    assert main(["report", str(rd), "--out", str(out)]) == 0
    html = _check_files(out, ["learning_curves.png"])
    assert not (rd / "report").exists()
    assert "skipped" in html and "candidate" in html.lower()
    assert not (out / "candidate_probabilities.png").exists()
    assert len(_pngs(html)) == 1


def test_report_of_an_experiment(tmp_path: Path) -> None:
    exp = write_fake_experiment(
        tmp_path / "exp",
        models=("deepfm",),
        methods=("ce", "uniform", "search", "darts", "autoloss"),
        seeds=(1, 2, 3),
    )
    finish_experiment(exp)
    assert main(["report", str(exp.out)]) == 0
    out = exp.out / "report"
    names = [
        "metrics_by_method.png",
        "learning_curves_deepfm.png",
        "candidate_probabilities_deepfm-autoloss.png",
        "candidate_probabilities_deepfm-darts.png",
    ]
    html = _check_files(out, names)
    # fixed weights: a note, also when each seed has its own (search) and their mean moves
    assert not (out / "candidate_probabilities_deepfm-uniform.png").exists()
    assert not (out / "candidate_probabilities_deepfm-search.png").exists()
    assert "uses fixed weights" in html
    assert "Mean ± std and Welch t-tests" in html and "<b>" in html
    assert len(_pngs(html)) == len(list(out.glob("*.png")))


def test_report_of_an_unfinished_experiment_and_bad_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = write_fake_experiment(tmp_path / "exp", methods=("ce",), seeds=(1,))
    for run in exp.plan():
        (run.run_dir / "result.json").unlink()
    assert main(["report", str(exp.out)]) == 0
    assert "No finished runs" in (exp.out / "report" / "report.html").read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing" in err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_metrics_records_dedupe_resumed_steps_and_mean_over_seeds(tmp_path: Path) -> None:
    p = tmp_path / "metrics.jsonl"
    recs = [
        {"type": "eval", "split": "valid", "step": 4, "rows": 100, "auc": 0.6, "logloss": 0.7},
        {"type": "policy", "step": 2, "rows": 50, "p_ce": 0.3},
        {"type": "policy", "step": 2, "rows": 50, "p_ce": 0.4},  # repeated after a resume
        {"type": "eval", "split": "valid", "step": 8, "rows": 200, "auc": 0.7, "logloss": 0.6},
    ]
    p.write_text(
        "".join(json.dumps(r) + "\n" for r in recs) + '{"type": "eval", "ste'
    )  # truncated line
    evals, policy = read_metrics(p)
    assert [e["step"] for e in evals] == [4, 8] and [q["p_ce"] for q in policy] == [0.4]
    a = curve_from_records(evals, ["auc"])
    b = curve_from_records([{"rows": 100, "auc": 0.8}], ["auc"])
    m = mean_curve([a, b])
    assert list(m.rows) == [100, 200]
    assert np.allclose(m.values["auc"], [0.7, 0.7]) and list(m.n) == [2, 1]  # type: ignore[arg-type]
    # three seeds, one trains longer: its lone tail is not drawn as "the mean"
    c = curve_from_records([{"rows": r, "auc": 0.5} for r in (100, 200, 300)], ["auc"])
    m3 = mean_curve([a, a, c])
    assert list(m3.rows) == [100, 200] and np.allclose(m3.values["auc"], [0.5666667, 0.6333333])


@pytest.mark.parametrize("num_classes", [2, 5])
def test_policy_map_of_a_trained_controller(tmp_path: Path, num_classes: int) -> None:
    from autoloss.policies.gumbel import controller_input_from_probs, load_controller
    from autoloss.report.policy_map import compute_policy_map, grid_inputs, prediction_grid
    from encoded_fixtures import write_encoded_dataset

    data = write_encoded_dataset(tmp_path / "data", rows=1500, num_classes=num_classes)
    cfg = RunConfig()
    cfg.data.path = str(data)
    for k, v in {"loss.method": "autoloss", "train.epochs": 1, "optim.batch_size": 200,
                 "model.embed_dim": 4, "model.mlp": [8], "train.progress": "off",
                 "train.device": "cpu", "loss.update_every": 1, "train.log_every": 2}.items():  # fmt: skip
        cfg.set(k, v)
    cfg.out = str(tmp_path / "run")
    rd, _ = train_run(cfg, log=lambda s: None)
    pm = compute_policy_map(rd / "controller.pt", points=11)
    assert pm.task == ("binary" if num_classes == 2 else "multiclass")
    assert sorted(pm.alpha) == list(range(num_classes)) and pm.candidates == [
        "focal",
        "kl",
        "hinge",
        "ce",
    ]
    ctrl = load_controller(rd / "controller.pt")
    grid = prediction_grid(11)
    for c, a in pm.alpha.items():
        assert a.shape == (11, 4) and np.allclose(a.sum(1), 1, atol=1e-5)
        y, probs = grid_inputs(pm.task, num_classes, c, grid)
        if num_classes > 2:
            assert np.allclose(probs.sum(1), 1, atol=1e-6) and np.allclose(probs[:, c], grid)
        import torch

        x = controller_input_from_probs(torch.from_numpy(y), torch.from_numpy(probs))
        assert np.allclose(a, ctrl.network(x).numpy(), atol=1e-6)  # α of the frozen network
    assert main(["report", str(rd)]) == 0
    _check_files(
        rd / "report", ["policy_map.png", "candidate_probabilities.png", "learning_curves.png"]
    )
