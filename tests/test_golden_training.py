"""Behaviour guard: every ``--loss`` method reproduces its recorded golden run (tests/golden/)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from golden.training import CASES, GOLDEN, run_case

REFERENCE = json.loads(GOLDEN.read_text())
EXACT = REFERENCE["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def _close(a: Any, b: Any, path: str) -> None:
    """Exact equality on the recording CPU; elsewhere floats within 1e-4 relative."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and not EXACT:
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", list(CASES))
def test_golden_run(name: str, tmp_path: Path) -> None:
    got = run_case(name, tmp_path)
    want = REFERENCE["cases"][name]
    if not EXACT:  # tensor digests only hold bit for bit
        got, want = (
            {k: v for k, v in d.items() if k not in ("model", "controller")} for d in (got, want)
        )
    _close(got, want, name)
