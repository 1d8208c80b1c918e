"""Processes sharing a run: one writer per run directory, workers die with their parent, and a
distributed run that loses a rank says so in one line, once.

* two ``train --out R`` (or two ``--resume``) at once: the process writing ``R`` holds ``R.lock``
  (:mod:`autoloss.locks`); the other is refused in one line naming the holder, exit 2, and the
  run's ``metrics.jsonl`` holds one history;
* ``compare --jobs 2`` killed with SIGKILL: its workers (and multiprocessing's resource tracker)
  exit too, and the next ``compare`` takes their stale locks over and completes the grid;
* ``train --nproc 2`` with a rank stopped (SIGSTOP): one line naming the rank, then ``--resume``
  finishes the run; an error of the ranks printed once; a rank given a single row trains.

Deterministic interleavings: the first process is stopped with SIGSTOP once it holds its lock,
so the second always meets a live holder. Timeouts are hang guards, about ten times the loaded
run time (docs/reliability.md, "Tests").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from autoloss import locks
from autoloss.errors import ConfigError
from autoloss.experiments.locks import RunLock as ExperimentRunLock
from autoloss.locks import INHERITED_ENV, RunLock, hold_run
from autoloss.train import failures
from encoded_fixtures import write_encoded_dataset

pytestmark = pytest.mark.timeout(600)

#: A run long enough to be caught while it trains (hundreds of steps), short on an idle machine.
LONG = ["--epochs", "2", "--batch-size", "8", "--embed-dim", "4", "--mlp", "8",
        "--progress", "off", "--device", "cpu", "--threads", "1"]  # fmt: skip
GUARD_S = 480.0  # hang guard of one command


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_encoded_dataset(tmp_path_factory.mktemp("shared") / "tiny")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _autoloss(*argv: str) -> list[str]:
    return [sys.executable, "-m", "autoloss", *argv]


def _start(argv: list[str], **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), **popen
    )


def _wait_for(
    what: str, ready: Callable[[], bool], proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + GUARD_S
    while not ready():
        if proc is not None and proc.poll() is not None:
            out, err = (text or "" for text in proc.communicate())
            pytest.fail(f"exited ({proc.returncode}) before {what}:\n{out[-3000:]}\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"hang guard: waited {GUARD_S:.0f}s for {what}"
        time.sleep(0.1)


def _lock_pid(run_dir: Path) -> int | None:
    try:
        return int(json.loads(run_dir.with_name(run_dir.name + ".lock").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _steps(run_dir: Path) -> list[int]:
    """The steps of the run's eval records: one training history means strictly increasing."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r.get("type") == "eval"]


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _refused_while_stopped(holder: subprocess.Popen[str], run_dir: Path, argv: list[str]) -> str:
    """Stop ``holder`` once it holds ``run_dir``'s lock, run ``argv`` (refused), resume it."""
    _wait_for("the lock", lambda: _lock_pid(run_dir) == holder.pid, holder)
    holder.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(argv, capture_output=True, text=True, timeout=GUARD_S, env=_env())
    finally:
        holder.send_signal(signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    return _one_line(second.stderr)


# ------------------------------------------------------------------------ the lock, in-process
def test_the_lock_is_reentrant_in_one_process_and_compare_shares_it(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r"
    run.parent.mkdir()
    assert ExperimentRunLock is RunLock  # compare's lock is the train layer's (one module)
    outer = RunLock(run)  # compare's train_locked
    assert outer.acquire() and outer.mode == "own"
    with hold_run(run) as inner:  # train_run in the same process: the same lock, no refusal
        assert inner.mode == "again" and inner.token == outer.token
    assert outer.path.exists()  # the inner release leaves the outer's lock
    outer.release()
    assert not outer.path.exists()


def test_a_child_adopts_its_parents_lock_and_others_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "r"
    child = subprocess.Popen(["sleep", "900"])  # a live holder of another pid
    try:
        started = time.time()
        run.with_name("r.lock").write_text(
            json.dumps({"pid": child.pid, "host": locks._HOST, "started": started, "token": "abc"})
        )
        with pytest.raises(ConfigError) as refused, hold_run(run):
            pass
        assert f"pid {child.pid} on {locks._HOST} since " in str(refused.value)
        assert "--resume" in str(refused.value) and "\n" not in str(refused.value)
        monkeypatch.setenv(INHERITED_ENV, "abc")  # the --nproc launcher's token: rank 0 adopts
        with hold_run(run) as adopted:
            assert adopted.mode == "inherited"
        assert run.with_name("r.lock").exists()  # the holder removes it, not the adopter
    finally:
        child.kill()
        child.wait(timeout=60)


# ------------------------------------------------------------------------ two writers of a run
@pytest.mark.e2e
def test_two_trains_on_one_out_one_trains_the_other_is_refused(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = _autoloss("train", "--data", str(data), "--out", str(out), *LONG)
    first = _start(argv)
    try:
        line = _refused_while_stopped(first, out, argv)
        _, err = first.communicate(timeout=GUARD_S)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert line.startswith(f"autoloss train: error: --out {out}: this run is being written by ")
    assert f"pid {first.pid} on " in line and " since " in line and "--resume" in line
    assert _steps(out) == sorted(set(_steps(out))) and len(_steps(out)) == 2  # one history
    assert not out.with_name("run.lock").exists()


@pytest.mark.e2e
def test_two_trains_started_together_write_one_history(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = _autoloss("train", "--data", str(data), "--out", str(out), *LONG)
    procs = [_start(argv) for _ in range(2)]
    try:
        texts = [p.communicate(timeout=GUARD_S) for p in procs]
        outcomes = [(p.returncode, out_, err) for p, (out_, err) in zip(procs, texts)]
    finally:
        for p in procs:
            p.kill()
    assert sorted(code for code, _, _ in outcomes) == [0, 2], outcomes
    loser = next(err for code, _, err in outcomes if code == 2)
    _one_line(loser)  # the holder named, or (if it had already finished) "a finished run"
    assert _steps(out) == sorted(set(_steps(out))) and len(_steps(out)) == 2


@pytest.mark.e2e
def test_two_resumes_of_one_run_one_resumes_the_other_is_refused(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    fresh = _autoloss("train", "--data", str(data), "--out", str(out), *LONG,
                      "--set", "train.checkpoint_every=20")  # fmt: skip
    killed = _start(fresh)
    try:
        _wait_for("a checkpoint", (out / "checkpoint.pt").exists, killed)
    finally:
        killed.kill()  # SIGKILL: its lock stays behind, stale
        killed.communicate(timeout=GUARD_S)
    assert _lock_pid(out) == killed.pid
    resume = _autoloss("train", "--out", str(out), "--resume", "--progress", "off")
    first = _start(resume)  # takes the dead process's lock over
    try:
        line = _refused_while_stopped(first, out, resume)
        _, err = first.communicate(timeout=GUARD_S)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert f"this run is being written by pid {first.pid} on " in line, line
    assert json.loads((out / "result.json").read_text())["epochs"] == 2
    assert _steps(out) == sorted(set(_steps(out))) and len(_steps(out)) == 2


# ------------------------------------------------------------------------ compare's workers
def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _gone(procs: list[psutil.Process]) -> bool:
    for p in procs:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


@pytest.mark.e2e
def test_killing_compare_takes_its_workers_with_it_and_a_rerun_completes(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    argv = _autoloss("compare", "--data", str(data), "--models", "deepfm", "--methods", "ce",
                     "--seeds", "2", "--jobs", "2", "--out", str(out), *LONG)  # fmt: skip
    log = (tmp_path / "compare.log").open("w")  # not a pipe: orphans would hold it open
    parent = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
    )
    runs = [out / "runs" / f"deepfm-ce-s{seed}" for seed in (2021, 2022)]
    try:
        # both workers hold their run's lock and have started training
        _wait_for(
            "both workers training",
            lambda: all(
                _lock_pid(r) not in (None, parent.pid) and (r / "config.yaml").exists()
                for r in runs
            ),
            parent,
        )
        family = _descendants(parent.pid)  # the workers, multiprocessing's resource tracker
        workers = {p.pid for p in family}
        assert {_lock_pid(r) for r in runs} <= workers
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=GUARD_S)
        deadline = time.monotonic() + 60  # a few seconds idle (workers look every 0.5 s)
        while not _gone(family) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [p for p in family if not _gone([p])]
        assert not alive, [(p.pid, p.cmdline()[:4]) for p in alive]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # whatever is left of this test's group
        log.close()
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=GUARD_S, env=_env())
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "took over a stale lock" in rerun.stdout, rerun.stdout
    for r in runs:
        assert json.loads((r / "result.json").read_text())["epochs"] == 2
        assert _steps(r) == sorted(set(_steps(r))) and len(_steps(r)) == 2


# ------------------------------------------------------------------------ --nproc failures
def _nproc_env(timeout_s: float) -> dict[str, str]:
    return _env(**{failures.TIMEOUT_ENV: f"{timeout_s:g}"})


def _rank(launcher: int, rank: int) -> psutil.Process | None:
    for p in _descendants(launcher):
        try:
            if p.environ().get("RANK") == str(rank):
                return p
        except psutil.Error:
            pass
    return None


@pytest.mark.slow  # a minute: it waits out a 30 s collective timeout (make test-all)
@pytest.mark.e2e
def test_a_stopped_rank_is_named_in_one_line_and_the_run_resumes(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    argv = _autoloss("train", "--nproc", "2", "--data", str(data), "--out", str(out), *LONG,
                     "--set", "train.checkpoint_every=20")  # fmt: skip
    # 30 s: long enough for any collective on a loaded machine, short enough for a test
    launcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=_nproc_env(30))  # fmt: skip
    try:
        _wait_for("a checkpoint", (out / "checkpoint.pt").exists, launcher)
        victim = _rank(launcher.pid, 1)
        assert victim is not None
        victim.send_signal(signal.SIGSTOP)
        _, err = launcher.communicate(timeout=GUARD_S)
    finally:
        launcher.kill()
    assert launcher.returncode not in (0, None)
    line = _one_line(err)
    assert f"rank 1 (pid {victim.pid}) stopped answering" in line, line
    assert "--resume" in line and failures.TIMEOUT_ENV in line
    assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE
    resume = _autoloss("train", "--nproc", "2", "--out", str(out), "--resume", "--progress", "off")
    done = subprocess.run(resume, capture_output=True, text=True, timeout=GUARD_S,
                          env=_nproc_env(120))  # fmt: skip
    assert done.returncode == 0, done.stderr[-6000:]
    assert json.loads((out / "result.json").read_text())["world_size"] == 2
    assert _steps(out) == sorted(set(_steps(out))) and len(_steps(out)) == 2


@pytest.mark.e2e
def test_an_error_of_the_ranks_is_printed_once(data: Path, tmp_path: Path) -> None:
    argv = _autoloss("train", "--nproc", "2", "--data", str(data), "--out", str(tmp_path / "r"),
                     "--lr", "1e30", "--epochs", "1", "--batch-size", "200", "--threads", "1",
                     "--progress", "off", "--device", "cpu")  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=GUARD_S,
                          env=_nproc_env(120))  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith("autoloss train: error: training stopped at step "), line


@pytest.mark.e2e
def test_nproc_two_trains_when_the_last_batch_gives_a_rank_one_row(
    data: Path, tmp_path: Path
) -> None:
    # 2400 training rows in batches of 799: the last batch has 3 rows, rank 0 trains on one
    # (BatchNorm in training mode) and rank 1 on two
    out = tmp_path / "run"
    argv = _autoloss("train", "--nproc", "2", "--data", str(data), "--out", str(out),
                     "--batch-size", "799", "--epochs", "1", "--threads", "1", "--progress", "off",
                     "--device", "cpu")  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=GUARD_S,
                          env=_nproc_env(120))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    assert json.loads((out / "result.json").read_text())["world_size"] == 2


@pytest.fixture(autouse=True)
def _no_inherited_locks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(INHERITED_ENV, raising=False)
    yield
