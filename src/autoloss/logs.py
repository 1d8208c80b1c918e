"""Logging: library code logs through ``logging.getLogger(__name__)``; the command line alone
installs handlers (:func:`configure`, called once by ``autoloss.cli.main``).

Every logger of the package sits under ``autoloss`` (``autoloss.experiments.compare``,
``autoloss.train.trainer``, ...). The package logger holds a ``NullHandler`` (set in
``autoloss/__init__.py``, as the logging HOWTO recommends for libraries): a program that imports
autoloss and configures no logging sees nothing from it; one that configures logging gets the
records like any other library's.

What the command line shows (:func:`configure`):

* ``INFO`` (progress: a run's evaluations, a grid's runs) and ``DEBUG`` (``--verbose``) on
  stdout, as bare lines: what the commands printed before they logged;
* ``WARNING`` and above on stderr as ``warning: ...`` / ``error: ...``.

``--quiet`` keeps warnings and errors only; ``--verbose`` adds the debug records. Worker
processes that train a grid's runs (``compare --jobs``, Ray tasks) are configured alike with
the level of the process that started them (:func:`configured_level`).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

PACKAGE = "autoloss"


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to ``sys.stdout`` or ``sys.stderr`` as they are when a record is emitted
    (like logging's own last-resort handler): a stream replaced later (pytest's capture, a
    redirect) is the one written."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return getattr(sys, self._name)  # type: ignore[no-any-return]

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it
        pass


class _Below(logging.Filter):
    """Passes the records under ``level``."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _ConsoleFormatter(logging.Formatter):
    """Bare messages for INFO; ``debug: LOGGER: ...``, ``warning: ...``, ``error: ...`` else."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno == logging.INFO:
            return text
        if record.levelno < logging.INFO:
            return f"debug: {record.name}: {text}"
        return f"{record.levelname.lower()}: {text}"


def configure(level: int = logging.INFO) -> None:
    """Show the package's records of ``level`` and above on the console (module docstring).
    Calling it again replaces the handlers it installed (one set, whatever the number of calls)."""
    logger = logging.getLogger(PACKAGE)
    for handler in list(logger.handlers):
        if isinstance(handler, _ConsoleHandler):
            logger.removeHandler(handler)
    out = _ConsoleHandler("stdout")
    out.addFilter(_Below(logging.WARNING))
    err = _ConsoleHandler("stderr")
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(_ConsoleFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)


def configured_level() -> int | None:
    """The level :func:`configure` set in this process, or None when it was not called (a
    library user's process: a worker it starts is left alone too)."""
    logger = logging.getLogger(PACKAGE)
    if any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        return logger.level
    return None


def configure_worker(level: int | None) -> None:
    """In a worker process: :func:`configure` with its parent's level (None: nothing)."""
    if level is not None:
        configure(level)


def level_of(*, quiet: bool = False, verbose: bool = False) -> int:
    """The level of the command line's ``--quiet`` / ``--verbose``."""
    return logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
