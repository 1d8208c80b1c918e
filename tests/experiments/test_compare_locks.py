"""Several ``compare`` processes on one experiment directory: per-run locks, atomic writes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import autoloss.experiments.compare as compare
import autoloss.experiments.locks as locks
import autoloss.experiments.tables as tables
from autoloss.cli import main
from autoloss.errors import ConfigError
from autoloss.experiments.compare import (
    Experiment,
    experiment_from_config,
    finish_experiment,
    prepare_experiment,
    run_experiment,
)
from autoloss.experiments.locks import RunLock
from autoloss.experiments.tables import read_results_csv, write_results_csv
from autoloss.train.config import RunConfig
from autoloss.train.trainer import Trainer

# Hang guards only, about ten times the loaded run time (docs/reliability.md, "Tests").
pytestmark = pytest.mark.timeout(600)

HOST = socket.gethostname()
EPOCHS = 2
TINY = ["--epochs", str(EPOCHS), "--batch-size", "256", "--embed-dim", "4", "--mlp", "8",
        "--progress", "off", "--device", "cpu", "--threads", "1"]  # fmt: skip
TRAINED = re.compile(r"^\[\d+/\d+\] (\S+): test AUC", re.MULTILINE)


def tiny_cfg(data: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    for k, v in {"train.epochs": 1, "train.max_steps": 3, "optim.batch_size": 256, "model.embed_dim": 4,
                 "model.mlp": [8], "train.progress": "off", "train.device": "cpu",
                 "train.num_threads": 1}.items():  # fmt: skip
        cfg.set(k, v)
    return cfg


def tiny_experiment(data: Path, out: Path, methods: tuple[str, ...] = ("ce",)) -> Experiment:
    exp = experiment_from_config(
        tiny_cfg(data), out, models=["deepfm"], methods=list(methods), num_seeds=1
    )
    return prepare_experiment(exp)


def lock_path(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + locks.LOCK_SUFFIX)


def write_lock(
    run_dir: Path, pid: int, *, host: str = HOST, age: float = 0.0, **extra: Any
) -> Path:
    """A lock file as another process would have written it, last touched ``age`` seconds ago."""
    p = lock_path(run_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    started = time.time() - age
    p.write_text(json.dumps({"pid": pid, "host": host, "started": started, **extra}))
    os.utime(p, (started, started))
    return p


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=120)  # reaped: the pid names no process
    return child.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    child = subprocess.Popen(["sleep", "900"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait(timeout=60)


def stray_files(exp: Path) -> list[str]:
    """Locks and temporary files left in an experiment directory."""
    return sorted(
        str(p.relative_to(exp))
        for p in exp.rglob("*")
        if p.name.endswith((".lock", ".tmp")) or ".lock." in p.name
    )


# ------------------------------------------------------------------------ two real processes
@pytest.mark.e2e
@pytest.mark.parametrize("jobs_a", [1, 2], ids=["serial+serial", "jobs2+serial"])
def test_two_compare_processes_share_the_grid_and_train_each_run_once(
    tiny_dataset: Path, tmp_path: Path, jobs_a: int
) -> None:
    out = tmp_path / "exp"
    argv = [sys.executable, "-m", "autoloss.cli", "compare", "--data", str(tiny_dataset),
            "--models", "deepfm", "--methods", "ce,uniform,focal", "--seeds", "2",
            "--out", str(out), *TINY]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [*argv, "--jobs", str(jobs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for jobs in (jobs_a, 1)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=480)[0])
    finally:
        for p in procs:
            p.kill()
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text

    names = [f"deepfm-{m}-s{s}" for s in (2021, 2022) for m in ("ce", "uniform", "focal")]
    trained = Counter(name for text in outputs for name in TRAINED.findall(text))
    assert trained == Counter(names), outputs  # each run trained by exactly one of the two
    for name in names:
        rd = out / "runs" / name
        assert json.loads((rd / "result.json").read_text())["epochs"] == EPOCHS
        evals = [
            json.loads(line)
            for line in (rd / "metrics.jsonl").read_text().splitlines()
            if '"eval"' in line
        ]
        assert [e["epoch"] for e in evals] == list(range(1, EPOCHS + 1))  # one training history
    rows = read_results_csv(out / "results.csv")
    assert sorted((r["method"], r["seed"]) for r in rows) == sorted(
        (m, s) for s in (2021, 2022) for m in ("ce", "uniform", "focal")
    )
    assert "incomplete" not in (out / "table.md").read_text()  # the last to finish saw all runs
    assert stray_files(out) == []


# ------------------------------------------------------------------------ stale and live locks
def test_stale_lock_of_a_dead_process_is_taken_over_and_the_run_trains(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    exp = tiny_experiment(tiny_dataset, tmp_path / "exp")
    (run,) = exp.plan()
    write_lock(run.run_dir, dead_pid())
    outcome = run_experiment(exp, log=lambda s: None, quiet_runs=True)
    assert outcome.trained == [run.name] and not outcome.elsewhere and not outcome.failed
    assert run.state() == "done"
    assert not lock_path(run.run_dir).exists()


@pytest.mark.parametrize(
    "case",
    ["dead pid", "reused pid", "other host, silent for 2 h", "unreadable for 2 min"],
)
def test_stale_locks_are_taken_over(tmp_path: Path, live_pid: int, case: str) -> None:
    run_dir = tmp_path / "runs" / "r"
    if case == "dead pid":
        write_lock(run_dir, dead_pid())
    elif case == "reused pid":  # the pid is alive but names a process started at another time
        write_lock(run_dir, live_pid, proc_start=1)
    elif case == "other host, silent for 2 h":
        write_lock(run_dir, live_pid, host=HOST + "-elsewhere", age=2 * 3600)
    else:
        p = write_lock(run_dir, 0, age=120)
        p.write_text("")
        os.utime(p, (time.time() - 120,) * 2)
    lock = RunLock(run_dir)
    assert lock.acquire() and lock.took_over
    info = json.loads(lock.path.read_text())
    assert info["pid"] == os.getpid() and info["host"] == HOST and info["token"] == lock.token
    lock.release()
    assert not lock.path.exists()
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [".guard"]  # nothing set aside


@pytest.mark.parametrize("case", ["live pid", "other host, fresh", "unreadable, fresh"])
def test_live_locks_are_respected(tmp_path: Path, live_pid: int, case: str) -> None:
    run_dir = tmp_path / "runs" / "r"
    if case == "live pid":
        p = write_lock(run_dir, live_pid, age=10 * 24 * 3600)  # however old: the pid is alive
    elif case == "other host, fresh":
        p = write_lock(run_dir, 1, host=HOST + "-elsewhere", age=60)
    else:
        p = write_lock(run_dir, 0)
        p.write_text("")
    before = p.read_bytes()
    lock = RunLock(run_dir)
    assert not lock.acquire() and not lock.held
    assert lock.holder is not None
    lock.release()  # a lock not held is not removed
    assert p.read_bytes() == before


def test_run_locked_by_a_live_process_is_left_to_it_then_taken_when_it_is_gone(
    tiny_dataset: Path,
    tmp_path: Path,
    live_pid: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exp"
    argv = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods",
            "ce,uniform", "--seeds", "1", "--out", str(out), *TINY]  # fmt: skip
    held = write_lock(out / "runs" / "deepfm-uniform-s2021", live_pid)
    before = held.read_bytes()
    assert main(argv) == 0  # a run left to another process is not a failure
    text = capsys.readouterr().out
    assert f"deepfm-uniform-s2021: being trained by pid {live_pid} on {HOST}" in text
    assert "1 runs left to other processes training them (deepfm-uniform-s2021)" in text
    assert held.read_bytes() == before  # untouched
    assert [r["method"] for r in read_results_csv(out / "results.csv")] == ["ce"]
    assert "**incomplete**: 1 of 2 runs" in (out / "table.md").read_text()

    # the holder dies without finishing: the next compare takes its lock over and trains the run
    os.kill(live_pid, 9)
    os.waitpid(live_pid, 0)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert re.search(r"\[1/1\] deepfm-uniform-s2021: test AUC", text) and "left to" not in text
    assert len(read_results_csv(out / "results.csv")) == 2
    assert "incomplete" not in (out / "table.md").read_text()
    assert stray_files(out) == []


def test_lock_is_released_when_the_run_fails_or_is_interrupted(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = tiny_experiment(tiny_dataset, tmp_path / "exp")
    (run,) = exp.plan()

    def broken(self: Trainer) -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Trainer, "finish", broken)
    outcome = run_experiment(exp, log=lambda s: None, quiet_runs=True)
    assert list(outcome.failed) == [run.name] and not outcome.elsewhere
    assert not lock_path(run.run_dir).exists()

    def interrupted(self: Trainer) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, log=lambda s: None, quiet_runs=True)
    assert not lock_path(run.run_dir).exists()
    assert stray_files(exp.out) == []


def test_a_run_finished_by_another_process_after_planning_is_not_trained_again(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = tiny_experiment(tiny_dataset, tmp_path / "exp")
    (run,) = exp.plan()
    run_experiment(exp, log=lambda s: None, quiet_runs=True)
    # this process planned the run as new (before the other one finished it)
    monkeypatch.setattr(compare.PlannedRun, "state", lambda self: "new")
    logged: list[str] = []
    outcome = run_experiment(exp, log=logged.append, quiet_runs=True)
    assert outcome.trained == [] and outcome.skipped == [run.name] and not outcome.elsewhere
    assert any("finished by another process" in line for line in logged)


def test_heartbeat_refreshes_a_held_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "LOCK_HEARTBEAT_S", 0.02)
    (tmp_path / "runs").mkdir()
    lock = RunLock(tmp_path / "runs" / "r")
    assert lock.acquire()
    try:
        old = time.time() - 3600
        os.utime(lock.path, (old, old))
        deadline = time.time() + 120
        while lock.path.stat().st_mtime < time.time() - 60 and time.time() < deadline:
            time.sleep(0.02)
        assert lock.path.stat().st_mtime > time.time() - 60
    finally:
        lock.release()
    assert not lock.path.exists()


_RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from autoloss.experiments.locks import RunLock

    run_dir, go, done = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    lock = RunLock(run_dir)
    print("won" if lock.acquire() else "busy", flush=True)
    while not done.exists():
        time.sleep(0.005)
    lock.release()
    """
)


def test_processes_taking_over_one_stale_lock_one_wins(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "r"
    write_lock(run_dir, dead_pid())
    go, done = tmp_path / "go", tmp_path / "done"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(run_dir), str(go), str(done)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        answers = {p.pid: p.stdout.readline().strip() for p in procs if p.stdout is not None}
        done.touch()
        for p in procs:
            assert p.wait(timeout=300) == 0
    finally:
        for p in procs:
            p.kill()
    winners = [pid for pid, a in answers.items() if a == "won"]
    assert len(winners) == 1, answers
    assert sorted(answers.values()) == ["busy"] * 5 + ["won"]
    assert not lock_path(run_dir).exists()


# ------------------------------------------------------------------------ atomic writes
def test_an_interrupted_results_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "results.csv"
    rows = [
        {"model": "deepfm", "method": m, "seed": 1, "test_auc": 0.8, "test_logloss": 0.4}
        for m in ("ce", "focal", "uniform")
    ]
    write_results_csv(path, rows)
    before = path.read_bytes()

    class Broken(tables.csv.DictWriter):  # type: ignore[type-arg]
        def writerow(self, row: Any) -> Any:
            if row.get("method") == "focal":
                raise OSError("disk full")
            return super().writerow(row)

    monkeypatch.setattr(tables.csv, "DictWriter", Broken)
    with pytest.raises(OSError, match="disk full"):
        write_results_csv(path, rows)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_interrupted_table_and_experiment_writes_keep_the_previous_files(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = tiny_experiment(tiny_dataset, tmp_path / "exp")
    run_experiment(exp, log=lambda s: None, quiet_runs=True)
    names = ("results.csv", "table.md", "experiment.yaml")
    before = {n: (exp.out / n).read_bytes() for n in names}
    (exp.plan()[0].run_dir / "result.json").unlink()  # the next tables would differ

    import autoloss.files as files

    def no_fsync(fd: int) -> None:
        raise OSError("killed")

    monkeypatch.setattr(files.os, "fsync", no_fsync)  # every write dies before its rename
    with pytest.raises(OSError, match="killed"):
        finish_experiment(exp)
    with pytest.raises(OSError, match="killed"):
        exp.save()
    monkeypatch.undo()

    def half_dump(data: Any, stream: Any = None, **kw: Any) -> None:
        stream.write("format: autoloss-exp")
        raise KeyboardInterrupt

    monkeypatch.setattr(compare.yaml, "safe_dump", half_dump)
    with pytest.raises(KeyboardInterrupt):
        exp.save()
    assert {n: (exp.out / n).read_bytes() for n in names} == before
    assert stray_files(exp.out) == []
    assert yaml.safe_load(before["experiment.yaml"])["methods"] == ["ce"]


def test_another_compare_writing_experiment_yaml_is_not_a_foreign_directory(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    out.mkdir()
    (out / ".experiment.yaml.x1y2.tmp").write_text("half")  # the other process's atomic write
    tiny_experiment(tiny_dataset, out)
    assert (out / "experiment.yaml").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an experiment directory"):
        tiny_experiment(tiny_dataset, other)
