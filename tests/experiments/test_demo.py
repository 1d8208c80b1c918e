"""``autoloss demo``: clean and noisy labels side by side, the table and a plain reading of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoloss.commands import demo
from autoloss.train.config import RunConfig


def test_plain_drops_markdown() -> None:
    assert demo.plain("**deepfm**: `gce` wins") == "deepfm: gce wins"


def test_demo_compares_clean_and_noisy_labels_and_reads_its_table(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real = demo.demo_config

    def on_tiny_data(epochs: int) -> RunConfig:
        cfg = real(epochs)
        cfg.data.path = str(tiny_dataset)  # not the embedded data: fast, nothing cached
        return cfg

    monkeypatch.setattr(demo, "demo_config", on_tiny_data)
    monkeypatch.setattr(demo, "DEMO_METHODS", ("ce", "autoloss"))
    report = demo.run_demo(tmp_path / "demo", seeds=2, epochs=1)
    out = capsys.readouterr().out
    assert report.is_file()
    assert "flipped training labels (clean validation)" in out
    reading = out[out.index("Reading") :]
    lines = [x for x in reading.splitlines() if x.startswith("- [")]
    assert [x.split("]")[0] for x in lines[:2]] == ["- [label_noise=0", "- [label_noise=0.3"]
    assert all("has the highest mean test AUC" in x for x in lines[:2])
    assert "`" not in reading and "**" not in reading  # plain text in the terminal
    runs = [p for p in (tmp_path / "demo" / "runs").glob("*/result.json")]
    assert len(runs) == 2 * 2 * 2  # methods x seeds x conditions
