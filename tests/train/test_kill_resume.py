"""``kill -9`` at any moment, then ``--resume``: the same final run as an uninterrupted one.

Training runs in subprocesses (the command line), killed with SIGKILL: once deterministically in
the middle of writing a checkpoint (a wrapper makes ``torch.save`` kill its own process half way
through the file), then at random moments. The resumed run's result, log and weights must equal
those of the uninterrupted run bit for bit (CPU, one thread).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from encoded_fixtures import write_encoded_dataset

#: Runs the CLI with torch.save patched to SIGKILL the process half way through write number N.
KILL_MID_SAVE = """
import os, signal, sys, torch
n, real, calls = int(sys.argv[1]), torch.save, [0]
def save(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == n:
        import io
        buf = io.BytesIO(); real(obj, buf, *a, **k)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2]); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, f, *a, **k)
torch.save = save
from autoloss.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _args(data: Path, out: Path, method: str) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(out), "--loss", method, "--model", "deepfm",
        "--embed-dim", "4", "--mlp", "16,16", "--batch-size", "100", "--epochs", "3",
        "--threads", "1", "--device", "cpu", "--progress", "off",
        "--set", "train.checkpoint_every=7", "--set", "train.log_every=5",
        "--set", "train.patience=5",
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(args: list[str], timeout: float = 480) -> None:
    cmd = [sys.executable, "-m", "autoloss.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]


def _kill_after(args: list[str], seconds: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoloss.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    time.sleep(seconds)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)


def _outcome(out: Path) -> dict[str, Any]:
    result = json.loads((out / "result.json").read_text())
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r.pop("train_seconds", None)
    for k in ("train_seconds", "train_rows_per_second"):
        result.pop(k)
    model = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in model.values())).hexdigest()
    return {"result": result, "records": records, "model": digest}


def kill_and_resume(tmp_path: Path, method: str, random_kills: int, seed: int) -> None:
    data = write_encoded_dataset(tmp_path / "data", rows=15000)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run(_args(data, ref, method))
    # 1. killed in the middle of its second checkpoint write
    mid_save = [sys.executable, "-c", KILL_MID_SAVE, "2", *_args(data, cut, method)]
    proc = subprocess.run(mid_save, capture_output=True, timeout=480, env=_env())
    assert proc.returncode == -signal.SIGKILL
    assert list(cut.glob(".checkpoint.pt.*.tmp")), "the kill should leave a half-written temp file"
    # 2. resumed, and killed again at random moments (startup, steps, evaluations, checkpoints)
    rng = random.Random(seed)
    for _ in range(random_kills):
        _kill_after([*_args(data, cut, method), "--resume"], rng.uniform(1.5, 4.0))
    _run([*_args(data, cut, method), "--resume"])
    assert not list(cut.glob(".*.tmp")) and not (cut / "checkpoint.pt").exists()
    got, want = _outcome(cut), _outcome(ref)
    assert got["result"] == want["result"]
    assert got["records"] == want["records"]
    assert got["model"] == want["model"]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("method", ["ce", "autoloss"])
def test_sigkill_mid_checkpoint_and_at_random_moments(tmp_path: Path, method: str) -> None:
    kill_and_resume(tmp_path, method, random_kills=2, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("method", ["ce", "uniform", "darts", "slf", "autoloss", "autoloss-soft"])
def test_sigkill_many_times_every_learning_method(tmp_path: Path, method: str) -> None:
    kill_and_resume(tmp_path, method, random_kills=6, seed=hash(method) % 1000)
