"""``autoloss prepare --input`` without ``--format``: one line naming the formats, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoloss.cli import main
from autoloss.data.formats import FORMATS

from .conftest import criteo_text, write_raw


def test_format_required_with_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_raw(tmp_path / "train.txt", criteo_text(20))
    out = tmp_path / "o"
    rc = main(["prepare", "--input", str(raw), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (
        f"autoloss prepare: error: --format is required with --input ({', '.join(FORMATS)})\n"
    )
    assert not out.exists()
