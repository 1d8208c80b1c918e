"""Corrupted artifacts are never used without a word.

checkpoint.pt, model.pt, controller.pt, search.json and result.json carry a digest sidecar
(``NAME.sha256``) written with them; a prepared dataset's meta.json records the SHA-256 of each
array. A flipped bit or a truncation is one line naming the file (exit 2, no traceback); a file
without a recorded digest (older versions, a file copied alone) is read as before.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_storage_faults import FAST, SMALL, cli, one_line_error, temporaries

from autoloss.errors import CheckpointError
from autoloss.files import _HASHED, digest_path, save_state, verify_digest
from autoloss.train.rundir import RunDir


def flip(path: Path, at: float = 0.5) -> None:
    """Flip one bit of ``path``, ``at`` of the way through it."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGE: dict[str, Callable[[Path], None]] = {"bit flip": flip, "truncation": truncate}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Criteo dataset prepared by the CLI (meta.json records its arrays' digests)."""
    where = tmp_path_factory.mktemp("prepared")
    assert cli(["synth", "criteo", "--rows", "2000", "--out", "raw.txt"], where).returncode == 0
    args = ["prepare", "--format", "criteo", "--input", "raw.txt", "--out", "ds"]
    assert cli(args, where).returncode == 0
    return where


@pytest.fixture(scope="module")
def autoloss_run(prepared: Path) -> Path:
    """A finished autoloss run (model.pt, controller.pt, result.json with digests)."""
    args = ["train", "--data", "ds", "--model", "lr", "--loss", "autoloss", *FAST, "--out", "al"]
    proc = cli(args, prepared)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return prepared / "al"


def _copy_run(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


# ------------------------------------------------------------------------------------ unit
def test_sidecar_survives_a_kill_between_its_write_and_the_rename(tmp_path: Path) -> None:
    """The sidecar lists the new digest and the current file's before the rename: a kill
    right before the rename leaves the old file, still accepted; after it, the new one alone."""
    path = tmp_path / "checkpoint.pt"
    save_state({"w": torch.zeros(5)}, path)
    old = json.loads(digest_path(path).read_text())["digests"]
    assert len(old) == 1
    import autoloss.files as files

    real_replace = files.os.replace

    def killed(src: str, dst: str) -> None:
        if Path(dst) == path:
            raise KeyboardInterrupt  # the moment between the sidecar and the rename
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(files.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            save_state({"w": torch.ones(5)}, path)
    listed = json.loads(digest_path(path).read_text())["digests"]
    assert len(listed) == 2 and listed[1] == old[0]
    _HASHED.clear()
    verify_digest(path, "the checkpoint")  # the old file: accepted
    assert torch.equal(RunDir(tmp_path).load_checkpoint()["w"], torch.zeros(5))
    save_state({"w": torch.ones(5)}, path)  # the next write: the new digest alone
    assert len(json.loads(digest_path(path).read_text())["digests"]) == 1
    assert temporaries(tmp_path) == []


def test_a_file_without_a_sidecar_loads_as_before(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "autoloss-model-1", "state_dict": {}}, path)  # an older version's
    assert RunDir(tmp_path).load_model_state()["state_dict"] == {}
    save_state({"w": torch.zeros(3)}, path)  # replacing it records both digests meanwhile
    assert len(json.loads(digest_path(path).read_text())["digests"]) == 1


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_one_line(damage: str, tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.save_checkpoint({"w": torch.arange(1000.0)})
    DAMAGE[damage](rd.checkpoint)
    with pytest.raises(CheckpointError) as err:
        rd.load_checkpoint()
    text = str(err.value)
    assert text.startswith(f"{rd.checkpoint}: the checkpoint is ")
    assert ("truncated: " if damage == "truncation" else "damaged: its SHA-256 differs") in text
    assert "--overwrite" in text and "\n" not in text


# ------------------------------------------------------------------------------- commands
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_from_a_damaged_checkpoint_is_one_line(
    damage: str, prepared: Path, tmp_path: Path
) -> None:
    """An unfinished run's checkpoint damaged: ``--resume`` refuses it by name."""
    args = ["train", "--data", str(prepared / "ds"), *SMALL, *FAST, "--out", "run"]
    run = tmp_path / "run"
    proc = cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # make it an unfinished run again: a checkpoint (saved like the trainer does) and no result
    state = {"format": "not-read", "w": torch.zeros(100)}
    RunDir(run).save_checkpoint(state)
    (run / "result.json").unlink()
    DAMAGE[damage](run / "checkpoint.pt")
    again = cli([*args, "--resume"], tmp_path)
    one_line_error(
        again,
        "run/checkpoint.pt: the checkpoint is ",
        "truncated" if damage == "truncation" else "damaged",
        "--overwrite",
    )


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["predict", "export", "report"])
def test_a_damaged_model_is_one_line(
    command: str, damage: str, prepared: Path, autoloss_run: Path, tmp_path: Path
) -> None:
    run = _copy_run(autoloss_run, tmp_path)
    DAMAGE[damage](run / "model.pt")
    args = {
        "predict": ["predict", "--run", str(run), "--input", str(prepared / "raw.txt")],
        "export": ["export", "--run", str(run), "--format", "torchscript"],
        "report": ["report", str(run)],
    }[command]
    if command == "report":
        # the report reads the controller (its policy map), not the model: a damaged one is
        # said in the report, in place of the map, and the rest of the report is written
        DAMAGE[damage](run / "controller.pt")
        proc = cli([*args, "--out", str(tmp_path / "rep")], tmp_path)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
        word = "truncated" if damage == "truncation" else "damaged"
        assert f"the controller file is {word}" in page
        return
    proc = cli([*args, "--out", str(tmp_path / "o")], tmp_path)
    word = "truncated" if damage == "truncation" else "damaged"
    one_line_error(proc, f"{run / 'model.pt'}: the model file is {word}", "--overwrite")
    assert not (tmp_path / "o").exists() and temporaries(tmp_path) == []


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_controller_is_refused_by_controller(
    damage: str, prepared: Path, autoloss_run: Path, tmp_path: Path
) -> None:
    ctrl = tmp_path / "controller.pt"
    shutil.copy(autoloss_run / "controller.pt", ctrl)
    shutil.copy(digest_path(autoloss_run / "controller.pt"), digest_path(ctrl))
    DAMAGE[damage](ctrl)
    args = ["train", "--data", str(prepared / "ds"), "--model", "lr", "--loss", "autoloss"]
    proc = cli([*args, "--controller", str(ctrl), *FAST, "--out", "t"], tmp_path)
    one_line_error(proc, f"{ctrl}: the controller file is ")
    assert not (tmp_path / "t").exists()


def test_a_controller_copied_alone_is_used_as_before(
    prepared: Path, autoloss_run: Path, tmp_path: Path
) -> None:
    ctrl = tmp_path / "controller.pt"
    shutil.copy(autoloss_run / "controller.pt", ctrl)  # no sidecar: unchecked, as before
    args = ["train", "--data", str(prepared / "ds"), "--model", "lr", "--loss", "autoloss"]
    proc = cli([*args, "--controller", str(ctrl), *FAST, "--out", "t"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("array", ["train/x.npy", "valid/y.npy"])
def test_a_damaged_dataset_array_is_one_line(
    array: str, damage: str, prepared: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "ds"
    shutil.copytree(prepared / "ds", ds)
    DAMAGE[damage](ds / array) if damage == "truncation" else flip(ds / array, 0.9)
    proc = cli(["train", "--data", str(ds), *SMALL, *FAST, "--out", "r"], tmp_path)
    if damage == "truncation":  # the array's shape check may speak first: either names it
        one_line_error(proc, str(ds / array))
    else:
        one_line_error(proc, f"{ds / array}: {array} is damaged", "prepare the dataset again")
    assert not (tmp_path / "r").exists()


def test_result_json_damaged_is_one_line_in_report_and_compare(
    prepared: Path, tmp_path: Path
) -> None:
    args = ["--data", str(prepared / "ds"), "--models", "lr", "--methods", "ce", "--seeds", "1"]
    first = cli(["compare", *args, *FAST, "--out", "exp"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (result,) = (tmp_path / "exp").rglob("result.json")
    text = result.read_text()
    result.write_text(text.replace('"auc": 0.', '"auc": 1.', 1))  # still valid JSON
    again = cli(["compare", *args, *FAST, "--out", "exp"], tmp_path)
    rel = result.relative_to(tmp_path)
    one_line_error(again, f"{rel}: result.json is damaged", "remove the run directory")
    rep = cli(["report", str(result.parent), "--out", str(tmp_path / "rep")], tmp_path)
    one_line_error(rep, f"{result}: result.json is damaged")
