"""Shared fixtures (helpers importable from tests/, see pyproject's pytest pythonpath)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from encoded_fixtures import write_encoded_dataset

# Property-based tests: a bounded number of examples in `make test`; HYPOTHESIS_PROFILE=slow for
# many (`make test-all` style runs). No deadline: the machines here are shared and noisy.
_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("default", max_examples=25, **_common)
settings.register_profile("slow", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_encoded_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny_multiclass_dataset(tmp_path: Path) -> Path:
    return write_encoded_dataset(tmp_path / "tiny5", num_classes=5)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test, the previous count restored after: tests of tiny tensors
    run faster on one thread than on two on a shared 2-core machine (``tests/ops`` and
    ``tests/models`` use it for every test)."""
    import torch  # here: a run of tests that need no torch does not import it

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
