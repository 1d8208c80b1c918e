"""Logging (autoloss.logs): library code logs, the command line shows (progress on stdout,
warnings and errors on stderr, --quiet / --verbose), a program that configures no logging sees
nothing."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoloss import logs
from autoloss.cli import main

PACKAGE = logging.getLogger("autoloss")


@pytest.fixture(autouse=True)
def _restore_package_logger() -> Iterator[None]:
    handlers, level = list(PACKAGE.handlers), PACKAGE.level
    yield
    PACKAGE.handlers[:] = handlers
    PACKAGE.setLevel(level)


def _say_each_level() -> None:
    log = logging.getLogger("autoloss.experiments.compare")
    log.debug("a debug line")
    log.info("an info line")
    log.warning("a warning line")
    log.error("an error line")


def test_a_program_that_configures_no_logging_sees_nothing() -> None:
    code = (
        "import logging, autoloss\n"
        "log = logging.getLogger('autoloss.train.trainer')\n"
        "log.info('progress'); log.warning('careful'); log.error('bad')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout == "" and done.stderr == ""


@pytest.mark.parametrize(
    ("flags", "out", "err"),
    [
        ({}, "an info line\n", "warning: a warning line\nerror: an error line\n"),
        ({"quiet": True}, "", "warning: a warning line\nerror: an error line\n"),
        (
            {"verbose": True},
            "debug: autoloss.experiments.compare: a debug line\nan info line\n",
            "warning: a warning line\nerror: an error line\n",
        ),
    ],
    ids=["default", "quiet", "verbose"],
)
def test_the_command_lines_logging(
    capsys: pytest.CaptureFixture[str], flags: dict[str, bool], out: str, err: str
) -> None:
    logs.configure(logs.level_of(**flags))
    logs.configure(logs.level_of(**flags))  # again: still one line per record
    _say_each_level()
    got = capsys.readouterr()
    assert (got.out, got.err) == (out, err)
    assert logs.configured_level() == logs.level_of(**flags)


def test_a_worker_is_configured_with_its_parents_level_only_when_it_has_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    PACKAGE.handlers[:] = [h for h in PACKAGE.handlers if isinstance(h, logging.NullHandler)]
    assert logs.configured_level() is None
    logs.configure_worker(None)  # a library user's process: nothing installed
    assert logs.configured_level() is None
    logs.configure_worker(logging.WARNING)
    _say_each_level()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_hides_the_runs_progress_not_the_commands_result(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    argv = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--epochs", "1",
            "--progress", "off"]  # fmt: skip
    argv = ["--quiet", *argv] if where == "before" else [*argv, "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("run: ") and "test AUC" in out  # the command's own output
    assert "epoch 1 step" not in out  # the trainer's progress


def test_the_runs_progress_is_shown_by_default(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--epochs", "1",
            "--progress", "off"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "epoch 1 step" in out and "test AUC" in out
