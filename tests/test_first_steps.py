"""Every ``--loss`` method's first steps match their recording on any machine, within a measured
tolerance (tests/golden/first_steps.py; the bit-exact whole trainings are
tests/test_golden_training.py, on the recording machine only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from golden import first_steps as fs
from golden.fingerprint import fingerprint, mismatch

RECORDED = json.loads(fs.FIRST_STEPS.read_text())
CASES = [n for n in RECORDED["cases"]]


def test_every_golden_case_but_search_is_recorded() -> None:
    from golden.training import CASES as GOLDEN_CASES

    assert sorted(CASES) == sorted(n for n in GOLDEN_CASES if n not in fs.SKIPPED)
    assert RECORDED["steps"] == fs.STEPS


@pytest.mark.parametrize("name", CASES)
def test_first_steps_match_the_recording(name: str, tmp_path: Path) -> None:
    got = fs.run_first_steps(name, tmp_path)
    want = RECORDED["cases"][name]
    fs.compare(want, got, name)  # same steps, same figures
    assert fs.first_mismatch(want, got) == ""


def test_a_one_percent_change_of_the_learning_rate_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the tolerance is not vacuous: the smallest change measured (tests/golden/README.md)
    monkeypatch.setattr(fs, "STABLE", [*fs.STABLE, "--lr", "0.00101"])
    got = fs.run_first_steps("ce", tmp_path)
    assert fs.first_mismatch(RECORDED["cases"]["ce"], got).startswith("step ")


def test_the_fingerprint_names_what_results_depend_on() -> None:
    here = fingerprint(1)
    assert here["threads"] == 1 and here["torch"] and here["cpu_capability"]
    assert mismatch(here, here) == []
    assert mismatch(here, fingerprint(2)) == ["threads: 1 != 2"]
    other = {**here, "cpu_model": "another CPU"}
    assert mismatch(here, other) == [f"cpu_model: {here['cpu_model']!r} != 'another CPU'"]
