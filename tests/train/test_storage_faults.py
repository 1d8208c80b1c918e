"""The machine's own faults: a full disk, ``ulimit -f``, a read-only or unusable output path.

Every command answers with one line on stderr naming the file and what was being written (exit
2, no traceback), leaves no temporary file or directory behind, and a failed checkpoint write
keeps the previous checkpoint intact. A full or read-only file system is a small tmpfs where
``mount`` works (root, as here); elsewhere those tests are skipped with the reason, and the file
size limit (``RLIMIT_FSIZE``, which Python turns into EFBIG) stands in for a full disk.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from autoloss.errors import StorageError
from autoloss.files import (
    digest_path,
    remove_stale_temporaries,
    save_state,
    verify_digest,
    write_text,
)
from autoloss.train.rundir import RunDir
from encoded_fixtures import write_encoded_dataset

FAST = ["--epochs", "1", "--max-steps", "5", "--threads", "1", "--progress", "off"]
SMALL = ["--model", "lr", "--loss", "ce", "--batch-size", "128"]


def cli(
    args: list[str], cwd: Path, *, fsize: int | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``autoloss ARGS`` in a subprocess (``fsize``: the file size limit in bytes)."""

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "autoloss", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
        env=env,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of a failed command (exit 2), holding every needle."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and err.count("\n") == 1, err[-3000:]
    for needle in needles:
        assert needle in err, err
    return err


def temporaries(root: Path) -> list[Path]:
    """Temporary files (``.NAME.<random>.tmp``) and build directories (``.NAME.tmp-...``)."""
    return [p for p in root.rglob(".*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


# ----------------------------------------------------------------------------- file systems
def _mount(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (not root, or no mount in this container): {exc}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(size, ro=False)``: a fresh small tmpfs mounted under ``tmp_path``."""
    mounted: list[Path] = []

    def make(size: str, *, ro: bool = False) -> Path:
        where = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        _mount(where, f"size={size}" + (",ro" if ro else ""))
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        _umount(where)


def remount(where: Path, size: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(where)],
        check=True,
        capture_output=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_encoded_dataset(tmp_path_factory.mktemp("data") / "tiny", rows=1500)


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished small run (model.pt, result.json) for predict/export/report."""
    where = tmp_path_factory.mktemp("trained")
    proc = cli(["train", "--data", str(data), *SMALL, *FAST, "--out", "run"], where)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return where / "run"


# ---------------------------------------------------------------------- unit: files.py
def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC, EFBIG, EDQUOT in the middle of a write: one StorageError line naming the file and
    what was written; the previous file (and its digest) intact; no temporary file."""
    target = tmp_path / "checkpoint.pt"
    save_state({"w": torch.arange(10)}, target, what="the checkpoint")
    before = target.read_bytes()
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):

        def full(obj: object, fh: object, code: int = code) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(torch, "save", full)
        with pytest.raises(StorageError) as err:
            save_state({"w": torch.arange(1000)}, target, what="the checkpoint")
        text = str(err.value)
        assert "\n" not in text and text.startswith(f"{target}: cannot write the checkpoint: ")
        assert text.endswith("; the previous checkpoint is intact")
        assert target.read_bytes() == before
        verify_digest(target, "the checkpoint")  # the sidecar still accepts it
        assert temporaries(tmp_path) == []


def test_a_failed_checkpoint_on_a_full_disk_keeps_the_previous_one(
    tmpfs: Callable[..., Path],
) -> None:
    """A real full tmpfs: the second checkpoint does not fit beside the first."""
    fs = tmpfs("256k")
    rd = RunDir(fs)
    rd.save_checkpoint({"w": torch.zeros(30_000)})  # 120 kB
    good = rd.checkpoint.read_bytes()
    with pytest.raises(StorageError, match="cannot write the checkpoint: no space left on device"):
        rd.save_checkpoint({"w": torch.ones(40_000)})
    assert rd.checkpoint.read_bytes() == good
    assert torch.equal(rd.load_checkpoint()["w"], torch.zeros(30_000))
    assert temporaries(fs) == []


def test_append_record_on_a_full_disk_is_one_line(tmpfs: Callable[..., Path]) -> None:
    fs = tmpfs("16k")
    rd = RunDir(fs)
    with pytest.raises(StorageError, match="cannot write the training log: no space left"):
        for i in range(10_000):
            rd.append_record({"step": i, "pad": "x" * 100})


def test_write_text_into_a_read_only_directory(tmpfs: Callable[..., Path]) -> None:
    fs = tmpfs("64k", ro=True)
    with pytest.raises(StorageError, match="cannot write the table: read-only file system"):
        write_text(fs / "table.md", "x", what="the table")


def test_unwritable_directory_by_permissions(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0o555 directory: the read-only tmpfs tests cover it")
    d = tmp_path / "locked"
    d.mkdir(mode=0o555)
    try:
        proc = cli(["report", str(tmp_path), "--out", str(d / "rep")], tmp_path)
        one_line_error(proc, "cannot write there", "not writable")
    finally:
        d.chmod(0o755)


def test_stale_temporaries_are_removed_only_when_old_enough(tmp_path: Path) -> None:
    fresh = tmp_path / ".table.md.abc123.tmp"
    old = tmp_path / ".results.csv.def456.tmp"
    fresh.write_text("x")
    old.write_text("y")
    os.utime(old, (1, 1))
    assert remove_stale_temporaries(tmp_path, min_age=600) == 1
    assert fresh.exists() and not old.exists()
    assert remove_stale_temporaries(tmp_path) == 1 and not fresh.exists()


# --------------------------------------------------------------------------- commands
def test_train_and_resume_on_a_full_disk(data: Path, tmpfs: Callable[..., Path]) -> None:
    """The first checkpoint fits, the second does not: one line, the first kept; once there is
    room, ``--resume`` continues from it and finishes."""
    fs = tmpfs("8m")
    args = ["train", "--data", str(data), *SMALL, *FAST, "--out", str(fs / "run")]
    args += ["--set", "train.checkpoint_every=2"]
    # the lr model's checkpoint is a few kB: size the disk so that one fits and two do not
    probe = cli([*args[:-2], "--set", "train.checkpoint_every=100"], fs.parent)
    assert probe.returncode == 0, probe.stderr[-2000:]
    size = sum(p.stat().st_size for p in (fs / "run").rglob("*") if p.is_file())
    ckpt = (fs / "run" / "model.pt").stat().st_size * 3  # model, optimiser moments, best weights
    subprocess.run(["rm", "-rf", str(fs / "run")], check=True)
    remount(fs, f"{(size + ckpt + ckpt // 2) // 1024 + 8}k")
    proc = cli(args, fs.parent)
    if proc.returncode == 0:
        pytest.skip("the checkpoints fitted: the size estimate is off on this platform")
    one_line_error(proc, "checkpoint.pt: cannot write the checkpoint: no space left on device")
    assert temporaries(fs) == []
    rd = RunDir(fs / "run")
    if rd.checkpoint.exists():  # the second one failed: the first one is intact and resumes
        assert "the previous checkpoint is intact" in proc.stderr
        verify_digest(rd.checkpoint, "the checkpoint")
        remount(fs, "8m")
        again = cli([*args, "--resume"], fs.parent)
        assert again.returncode == 0, again.stderr[-2000:]
        assert rd.result.is_file() and not rd.checkpoint.exists()
        assert not digest_path(rd.checkpoint).exists()


def test_train_with_a_file_size_limit_is_one_line(data: Path, tmp_path: Path) -> None:
    """``ulimit -f`` (EFBIG): works without mount, on any machine."""
    args = ["train", "--data", str(data), *FAST, "--out", "run"]
    proc = cli(args, tmp_path, fsize=64 * 1024)
    one_line_error(proc, "cannot write", "file too large (the file size limit: ulimit -f)")
    assert temporaries(tmp_path) == []
    assert not (tmp_path / "run").exists()  # a fresh run that failed leaves nothing


def test_prepare_on_a_full_disk_leaves_no_build_directory(
    tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    assert cli(["synth", "criteo", "--rows", "2000", "--out", "raw.txt"], tmp_path).returncode == 0
    fs = tmpfs("96k")
    proc = cli(
        ["prepare", "--format", "criteo", "--input", "raw.txt", "--out", str(fs / "ds")], tmp_path
    )
    one_line_error(proc, f"{fs / 'ds'}: cannot write the dataset: no space left on device")
    assert list(fs.iterdir()) == []


def test_prepare_with_a_file_size_limit_leaves_no_build_directory(tmp_path: Path) -> None:
    assert cli(["synth", "criteo", "--rows", "2000", "--out", "raw.txt"], tmp_path).returncode == 0
    (tmp_path / "out").mkdir()
    args = ["prepare", "--format", "criteo", "--input", "raw.txt", "--out", "out/ds"]
    proc = cli(args, tmp_path, fsize=40 * 1024)
    one_line_error(proc, "cannot write the dataset: file too large")
    assert list((tmp_path / "out").iterdir()) == []


def _command(command: str, out: str, data: Path, trained: Path) -> list[str]:
    """The arguments of ``command`` writing to ``out`` (``resume``: the run at ``out``)."""
    return {
        "train": ["train", "--data", str(data), *SMALL, *FAST, "--out", out],
        "resume": ["train", "--resume", "--out", out],
        "prepare": [
            "prepare",
            "--format",
            "criteo",
            "--input",
            str(data / "meta.json"),
            "--out",
            out,
        ],
        "predict": [
            "predict",
            "--run",
            str(trained),
            "--input",
            str(data / "meta.json"),
            "--out",
            out,
        ],
        "export": ["export", "--run", str(trained), "--format", "onnx", "--out", out],
        "report": ["report", str(trained), "--out", out],
        "compare": [
            "compare",
            "--data",
            str(data),
            "--models",
            "lr",
            "--methods",
            "ce",
            "--seeds",
            "1",
            *FAST,
            "--out",
            out,
        ],
    }[command]


@pytest.mark.parametrize(
    "command", ["train", "resume", "prepare", "predict", "export", "report", "compare"]
)
def test_read_only_output_is_refused_before_any_work(
    command: str, data: Path, trained: Path, tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    fs = tmpfs("64k", ro=True)
    out = str(fs / "x")
    args = _command(command, out, data, trained)
    proc = cli(args, tmp_path)
    one_line_error(proc, f"{out} (column --out): cannot write there:", "read-only file system")


@pytest.mark.parametrize("command", ["train", "resume", "report", "compare"])
def test_out_under_a_file_is_one_line(
    command: str, data: Path, trained: Path, tmp_path: Path
) -> None:
    (tmp_path / "somefile").write_text("x")
    out = "somefile/run"
    args = _command(command, out, data, trained)
    proc = cli(args, tmp_path)
    one_line_error(proc, "cannot create it: somefile is a file, not a directory")


def test_report_on_a_full_disk_then_removes_what_a_killed_report_left(
    trained: Path, tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    fs = tmpfs("40k")
    proc = cli(["report", str(trained), "--out", str(fs / "rep")], tmp_path)
    one_line_error(proc, "no space left on device")
    assert temporaries(fs) == []
    # a report killed mid-write leaves its temporary file: the next report removes it
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / ".curves.png.k1ll3d.tmp").write_bytes(b"\x89PNG half")
    done = cli(["report", str(trained), "--out", str(rep)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert temporaries(rep) == [] and (rep / "report.html").is_file()


def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(
    trained: Path, tmp_path: Path, tmpfs: Callable[..., Path]
) -> None:
    fs = tmpfs("4k")
    proc = cli(
        ["export", "--run", str(trained), "--format", "torchscript", "--out", str(fs / "m.pt")],
        tmp_path,
    )
    one_line_error(
        proc, f"{fs / 'm.pt'}: cannot write the torchscript model: no space left on device"
    )
    assert list(fs.iterdir()) == []


def test_compare_on_a_full_disk_is_one_line(data: Path, tmp_path: Path) -> None:
    args = ["compare", "--data", str(data), "--models", "lr", "--methods", "ce", "--seeds", "1"]
    proc = cli([*args, *FAST, "--out", "exp"], tmp_path, fsize=2048)
    err = proc.stderr
    assert "Traceback" not in err, err[-3000:]
    assert proc.returncode in (1, 2), err[-2000:]
    assert "file too large" in err or "file too large" in proc.stdout
    assert temporaries(tmp_path) == []
