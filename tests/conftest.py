"""Shared fixtures (helpers importable from tests/, see pyproject's pytest pythonpath)."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoded_fixtures import write_encoded_dataset


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_encoded_dataset(tmp_path / "tiny")


@pytest.fixture
def tiny_multiclass_dataset(tmp_path: Path) -> Path:
    return write_encoded_dataset(tmp_path / "tiny5", num_classes=5)
