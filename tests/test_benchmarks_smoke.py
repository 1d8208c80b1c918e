"""Every benchmark suite runs at the smoke size and writes its JSON record (no speed asserted):
``python -m benchmarks SUITE... --smoke --json DIR``, in a process of its own (step-options
patches private functions of the step while it measures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.run import FORMAT, SUITES  # noqa: E402


def run_smoke(names: list[str], tmp_path: Path) -> None:
    out = tmp_path / "json"
    cmd = [sys.executable, "-m", "benchmarks", *names, "--smoke", "--json", str(out)]
    cmd += ["--workdir", str(tmp_path / "work")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        record = json.loads((out / f"{name}-smoke.json").read_text())
        assert record["format"] == FORMAT
        assert (record["suite"], record["size"]) == (name, "smoke")
        assert record["machine"]["cores"] >= 1 and record["machine"]["description"]
        assert record["date"] and record["revision"] and record["seconds"] >= 0
        assert isinstance(record["options"], list)
        rows = record["figures"]
        assert rows and all(isinstance(r, dict) and r for r in rows)
        assert f"## {name} (smoke)" in done.stdout


def test_the_fast_suites_at_the_smoke_size(tmp_path: Path) -> None:
    run_smoke([n for n, s in SUITES.items() if not s.slow], tmp_path)


@pytest.mark.slow
def test_the_slow_suites_at_the_smoke_size(tmp_path: Path) -> None:
    run_smoke([n for n, s in SUITES.items() if s.slow], tmp_path)


def test_the_harness_lists_its_suites_and_refuses_unknown_ones() -> None:
    cmd = [sys.executable, "-m", "benchmarks"]
    listed = subprocess.run([*cmd, "--list"], cwd=ROOT, capture_output=True, text=True)
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(SUITES)
    bad = subprocess.run([*cmd, "nope", "--smoke"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown suite nope" in bad.stderr
