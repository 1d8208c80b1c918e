"""docs/serving.md: its example runs and is quoted verbatim; written files get the umask's mode."""

from __future__ import annotations

import os
import runpy
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoloss.cli import main
from autoloss.files import write_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "serving.py"


def test_serving_example_is_quoted_verbatim() -> None:
    doc = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    assert f"```python\n{EXAMPLE.read_text(encoding='utf-8')}```" in doc
    assert "docs/serving.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_serving_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnxruntime")
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert "matches predict" in capsys.readouterr().out


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_text_mode_follows_umask(tmp_path: Path, umask_022: None) -> None:
    write_text(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == 0o644
    os.umask(0o077)
    write_text(tmp_path / "b.txt", "x")
    assert _mode(tmp_path / "b.txt") == 0o600


def test_exported_models_mode_follows_umask(
    tiny_dataset: Path, tmp_path: Path, umask_022: None
) -> None:
    pytest.importorskip("onnx")
    run = tmp_path / "run"
    train = ["train", "--data", str(tiny_dataset), "--out", str(run), "--model", "lr"]
    assert main([*train, "--max-steps", "1", "--progress", "off", "--device", "cpu"]) == 0
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.pt")):
        out = tmp_path / name
        assert main(["export", "--run", str(run), "--format", fmt, "--out", str(out)]) == 0
        assert _mode(out) == 0o644, name
    assert _mode(run / "model.pt") == 0o644
