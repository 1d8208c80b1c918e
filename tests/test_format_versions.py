"""Every versioned file a reader meets in another version is refused in one line (docs/formats.md).

Each case writes a file of this version with another version's identifier, then reads it the way
a command does: ``autoloss`` exits with status 2 and one line on stderr naming the file and the
version it found.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from autoloss.cli import main
from autoloss.data.store import FORMAT_VERSION
from autoloss.experiments.compare import EXPERIMENT_FORMAT
from autoloss.policies.gumbel import CONTROLLER_FORMAT
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from autoloss.train.rundir import MODEL_FORMAT


def _one_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (copied by each test that alters it)."""
    from encoded_fixtures import write_encoded_dataset

    root = tmp_path_factory.mktemp("formats")
    cfg = RunConfig()
    cfg.data.path = str(write_encoded_dataset(root / "data"))
    cfg.model.name = "lr"
    cfg.loss.method = "autoloss"  # writes controller.pt too
    cfg.optim.batch_size = 128
    cfg.train.epochs = 1
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    cfg.train.num_threads = 1
    cfg.out = str(root / "run")
    run_dir, _ = train_run(cfg, log=lambda s: None)
    return Path(run_dir)


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _resave(path: Path, **changes: object) -> None:
    """Rewrite a saved dict with ``changes``, its digest sidecar removed (an unchecked file)."""
    state = torch.load(path, weights_only=True)
    Path(f"{path}.sha256").unlink(missing_ok=True)
    torch.save({**state, **changes}, path)


def test_the_identifiers_are_the_documented_ones() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    for ident in (MODEL_FORMAT, CONTROLLER_FORMAT, EXPERIMENT_FORMAT, f"`{FORMAT_VERSION}`"):
        assert ident in text, ident


def test_a_dataset_of_another_format_version(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    meta_path = tiny_dataset / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    args = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    _one_line(capsys, "meta.json", f"unsupported format_version {FORMAT_VERSION + 1}")
    assert not (tmp_path / "r").exists()


def test_a_run_whose_dataset_copy_has_another_format_version(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained_run, tmp_path)
    meta_path = run / "dataset" / "meta.json"
    meta = json.loads(meta_path.read_text())
    Path(f"{meta_path}.sha256").unlink(missing_ok=True)
    meta_path.write_text(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    assert main(["evaluate", "--run", str(run)]) == 2
    _one_line(capsys, "dataset/meta.json", "unsupported format_version", "train the run again")


def test_a_model_file_of_another_format(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained_run, tmp_path)
    _resave(run / "model.pt", format="autoloss-model-999")
    assert main(["evaluate", "--run", str(run)]) == 2
    _one_line(capsys, "model.pt", "'autoloss-model-999' is not", "another version")


def test_a_checkpoint_of_another_format(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(trained_run, tmp_path)
    for name in ("result.json", "result.json.sha256"):
        (run / name).unlink(missing_ok=True)
    torch.save({"format": "autoloss-checkpoint-999"}, run / "checkpoint.pt")
    assert main(["train", "--resume", "--out", str(run)]) == 2
    _one_line(capsys, "checkpoint.pt", "'autoloss-checkpoint-999' is not", "another version")


def test_a_controller_of_another_format(
    trained_run: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    controller = tmp_path / "controller.pt"
    shutil.copy(trained_run / "controller.pt", controller)
    _resave(controller, format="autoloss-controller-999")
    out = tmp_path / "r"
    args = ["train", "--data", str(tiny_dataset), "--controller", str(controller)]
    args += ["--out", str(out)]
    assert main(args) == 2
    _one_line(capsys, "controller.pt", "'autoloss-controller-999' is not", "another version")
    assert not out.exists()


def test_an_experiment_of_another_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    raw = {"format": "autoloss-experiment-999", "models": ["lr"], "methods": ["ce"], "seeds": [1]}
    (exp / "experiment.yaml").write_text(yaml.safe_dump({**raw, "config": {}}))
    assert main(["report", str(exp)]) == 2
    _one_line(capsys, "experiment.yaml", "'autoloss-experiment-999' is not", "another version")
