"""Behaviour guard: every ``--loss`` method reproduces its recorded golden run, bit for bit.

A whole training's last bits hold only on the machine that recorded it (CPU, torch build,
kernels, threads: tests/golden/fingerprint.py), so these cases run only where the reference's
fingerprint matches this machine's exactly and are skipped elsewhere, saying why. What holds on
any machine is tested by tests/test_first_steps.py (the first steps within a measured tolerance).
``make golden`` records the committed code's references on this machine and compares the working
tree against them (``AUTOLOSS_GOLDEN`` names the reference file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from golden.fingerprint import fingerprint, mismatch
from golden.training import CASES, GOLDEN, THREADS, run_case

REFERENCE_PATH = Path(os.environ.get("AUTOLOSS_GOLDEN") or GOLDEN)
REFERENCE = json.loads(REFERENCE_PATH.read_text())
DIFFERENT = mismatch(REFERENCE.get("fingerprint", {}), fingerprint(THREADS))

pytestmark = pytest.mark.skipif(
    bool(DIFFERENT),
    reason=f"{REFERENCE_PATH.name} was recorded on another machine ({'; '.join(DIFFERENT[:2])}): "
    "bit-exact only there; `make golden` records and compares on this one",
)


def _equal(a: Any, b: Any, path: str) -> None:
    """Bit-identical, with the path of the first difference."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _equal(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_golden_run(name: str, tmp_path: Path) -> None:
    if name not in REFERENCE["cases"]:
        pytest.fail(
            f"{name}: no reference in {REFERENCE_PATH} (record it: tests/golden/training.py)"
        )
    _equal(run_case(name, tmp_path), REFERENCE["cases"][name], name)
