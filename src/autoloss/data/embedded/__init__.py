"""The embedded default dataset: MovieLens ml-latest-small (see ``README.txt``, ``CITATION.txt``).

``default_dataset()`` prepares it once (MovieLens protocol, seed 2021, 8:1:1) into the cache
directory ``$AUTOLOSS_HOME/datasets/ml-latest-small-<task>`` (``AUTOLOSS_HOME`` defaults to
``~/.cache/autoloss``) and returns that path. Two processes racing to prepare it are safe: each
writes its own temporary directory and the first rename wins; the loser uses the winner's.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoloss.errors import AutolossError

EMBEDDED_DIR = Path(__file__).resolve().parent
RATINGS = EMBEDDED_DIR / "ratings.csv.gz"
MOVIES = EMBEDDED_DIR / "movies.csv.gz"
NAME = "ml-latest-small"


def autoloss_home() -> Path:
    """``$AUTOLOSS_HOME`` or ``~/.cache/autoloss``."""
    env = os.environ.get("AUTOLOSS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "autoloss"


def cache_path(task: str = "binary") -> Path:
    return autoloss_home() / "datasets" / f"{NAME}-{task}"


def _usable(path: Path, task: str) -> bool:
    from autoloss.data.store import EncodedDataset

    try:
        ds = EncodedDataset(path)
        for name in ds.split_names:
            ds.split(name)
    except AutolossError:
        return False
    return ds.meta.get("format") == "movielens" and ds.meta.get("task") == task


def default_dataset(task: str = "binary") -> Path:
    """Path of the prepared embedded dataset for ``task`` (binary or multiclass), preparing it
    on first use."""
    from autoloss.data.prepare import prepare

    out = cache_path(task)
    if _usable(out, task):
        return out
    stale = out.exists()
    try:
        prepare("movielens", RATINGS, out, task=task, seed=2021, split="8:1:1", overwrite=stale)
    except AutolossError:
        if _usable(out, task):  # another process finished first
            return out
        raise
    return out
