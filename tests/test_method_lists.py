"""Every list of ``--loss`` methods a user reads agrees with what the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoloss.cli import build_parser, main
from autoloss.policies.registry import method_names

ROOT = Path(__file__).resolve().parent.parent
#: The methods as users write them (``weights:a,b,...`` is one method with its values).
METHODS = [m.split(":")[0] for m in method_names()]


def _listed(text: str) -> set[str]:
    """The backquoted or comma-separated method names mentioned in ``text``."""
    return {m for m in METHODS if re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", text)}


def test_the_registry_knows_every_method_the_trainer_accepts() -> None:
    assert {"ce", "focal", "kl", "hinge", "mse", "gce", "mae", "tce", "uniform", "weights",
            "search", "darts", "slf", "autoloss-soft", "autoloss", "reweight"} == set(METHODS)  # fmt: skip


def test_train_help_lists_every_method() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    help_text = sub.choices["train"].format_help()  # type: ignore[attr-defined]
    start = help_text.index("  --loss METHOD")
    loss_help = help_text[start : help_text.index("  --candidates", start)]
    assert _listed(" ".join(loss_help.split())) == set(METHODS)


def test_the_unknown_method_message_lists_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--loss", "nope", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown loss method 'nope'" in err and err.count("\n") == 1
    assert _listed(err.split("known:", 1)[1]) == set(METHODS)


def test_readme_lists_every_method() -> None:
    text = (ROOT / "README.md").read_text()
    paragraph = text[text.index("Loss methods (`--loss`)") :].split("\n\n", 1)[0]
    assert _listed(paragraph) == set(METHODS)


def test_docs_losses_table_lists_every_method() -> None:
    text = (ROOT / "docs" / "losses.md").read_text()
    section = text[text.index("## Loss methods") :].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert sorted(re.match(r"\| `([\w-]+)", r).group(1) for r in rows) == sorted(METHODS)  # type: ignore[union-attr]
