"""train.heap: the trainer keeps freed C heap memory for the next step (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from autoloss.cli import main
from autoloss.train import heap
from autoloss.train.config import RunConfig
from autoloss.train.trainer import Trainer

GLIBC = platform.libc_ver()[0] == "glibc"

#: Minor page faults of ten training steps (after five of warm-up) of an embedding table and an MLP
#: under dense Adam, the temporaries of a Criteo-sized batch (2000 rows x 39 fields): glibc's
#: defaults give freed memory back and fault it in again at the next step (10k-25k faults here);
#: with the heap kept, freed blocks are reused (0-1,500).
PROBE = """
import resource, sys, torch
from torch import nn
from autoloss.train import heap
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
torch.manual_seed(0)
torch.set_num_threads(1)
emb = nn.Embedding(100_000, 16)
mlp = nn.Sequential(nn.Linear(39 * 16, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 1))
opt = torch.optim.Adam([*emb.parameters(), *mlp.parameters()], lr=1e-3)
ids = torch.randint(0, 100_000, (2000, 39))
def step():
    loss = mlp(emb(ids).flatten(1)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(policy: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, policy],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the heap policy is glibc's mallopt")
def test_kept_heap_reuses_a_steps_freed_memory_instead_of_faulting_it_in_again() -> None:
    system, keep = _faults("system"), _faults("keep")
    assert system >= 1000
    assert keep * 5 < system


def _cfg(data: Path, policy: str) -> RunConfig:
    cfg = RunConfig()
    for key, value in {
        "data.path": str(data), "model.name": "fm", "loss.method": "ce", "train.epochs": 1,
        "train.progress": "off", "train.device": "cpu", "train.heap": policy,
    }.items():  # fmt: skip
        cfg.set(key, value)
    return cfg


@pytest.mark.parametrize("policy", ["keep", "system"])
def test_trainer_applies_the_heap_policy(
    policy: str, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(heap, "keep_freed_memory", lambda: calls.append(True) or True)
    Trainer(_cfg(tiny_dataset, policy), log=lambda s: None)
    assert calls == ([True] if policy == "keep" else [])


def test_a_bad_heap_policy_is_one_line_exit_2(
    tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", str(tiny_dataset), "--set", "train.heap=huge"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "train.heap" in err and "keep or system" in err
