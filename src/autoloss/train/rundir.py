"""The layout of a run directory, in one place: its file names, how each is written and read.

```
RUN/
  config.yaml      the run's RunConfig (``autoloss train --config RUN/config.yaml`` repeats it)
  metrics.jsonl    one JSON record per line: evaluations and loss-policy statistics
  checkpoint.pt    the state of an unfinished run (``--resume``); removed when it finishes
  checkpoint-tables/  sharded embedding tables of that state (``train.embeddings=sharded``), one
                   ``torch.distributed.checkpoint`` directory that every process writes its part of
  tables.json      with sharded tables: where each table lives and the bytes each process holds
  model-tables/    with sharded tables: the trained tables (model.pt names it), each process's part
  search.json      the outcome of ``--loss search``'s outer loop (the weights it trains with)
  result.json      final metrics and a summary of the loss policy
  model.pt         the recommender's state dict
  controller.pt    a learnt per-example controller (autoloss, slf, reweight), for transfer and reports
  example_weights.npz  a sample of the training rows' weights under a per-example policy (reweight)
  dataset/         the dataset's meta.json and vocabularies (``predict`` encodes raw rows alike)
```

Every file but the append-only ``metrics.jsonl`` is written atomically (temporary file, rename);
weights are read with ``weights_only=True``. ``checkpoint.pt``, ``model.pt``, ``controller.pt``,
``search.json`` and ``result.json`` carry a digest sidecar (``NAME.sha256``, see
:mod:`autoloss.files`) checked when they are read: a damaged file is one line, never used. In a distributed run rank 0 alone writes: the other
ranks hold a ``read_only`` RunDir, whose writing methods do nothing.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from autoloss.errors import CheckpointError, DataError
from autoloss.files import (
    TMP_SUFFIX,
    atomic_path,
    load_state,
    remove_with_digest,
    save_state,
    verify_digest,
    write_text,
    writing,
)
from autoloss.train.result import RunResult

MODEL_FORMAT = "autoloss-model-1"
#: What to do about a damaged result.json (or search.json) of a run.
RESULT_HINT = "remove the run directory (or train it again with --overwrite) to compute it again"

_Method = TypeVar("_Method", bound=Callable[..., None])


def _writes(method: _Method) -> _Method:
    """A method that writes the directory: it does nothing on a ``read_only`` RunDir."""

    @functools.wraps(method)
    def wrapper(self: RunDir, *args: Any, **kwargs: Any) -> None:
        if not self.read_only:
            method(self, *args, **kwargs)

    return cast(_Method, wrapper)


class RunDir:
    """A run directory at ``path`` (it need not exist yet)."""

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    TABLES = "tables.json"
    CHECKPOINT_TABLES = "checkpoint-tables"
    CHECKPOINT = "checkpoint.pt"
    SEARCH = "search.json"
    RESULT = "result.json"
    MODEL = "model.pt"
    CONTROLLER = "controller.pt"
    EXAMPLE_WEIGHTS = "example_weights.npz"
    DATASET = "dataset"

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        #: the ranks but 0 of a distributed run: every writing method does nothing
        self.read_only = read_only

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---------------------------------------------------------------- paths
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def search(self) -> Path:
        return self.path / self.SEARCH

    @property
    def result(self) -> Path:
        return self.path / self.RESULT

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def controller(self) -> Path:
        return self.path / self.CONTROLLER

    @property
    def example_weights(self) -> Path:
        return self.path / self.EXAMPLE_WEIGHTS

    @property
    def dataset(self) -> Path:
        return self.path / self.DATASET

    def remove_temporaries(self) -> int:
        """Remove the temporary files of writes that a killed process left (``.NAME.*.tmp``);
        returns how many. Only the process that owns the run directory may call this."""
        if self.read_only:
            return 0
        n = 0
        for p in self.path.glob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    # ---------------------------------------------------------------- writing
    @_writes
    def save_config(self, cfg_dict: dict[str, Any]) -> None:
        write_text(
            self.config, yaml.safe_dump(cfg_dict, sort_keys=False), what="the run's configuration"
        )

    @_writes
    def append_record(self, rec: dict[str, Any]) -> None:
        with (
            writing(self.metrics, "the training log"),
            open(self.metrics, "a", encoding="utf-8") as fh,
        ):
            fh.write(json.dumps(rec) + "\n")

    def truncate_records(self, step: int) -> int:
        """Drop the log records after ``step`` (those of work a resumed run redoes) and damaged
        lines; returns how many damaged lines were dropped (a last line cut short by a kill is
        not counted: it is expected)."""
        if self.read_only or not self.metrics.is_file():
            return 0
        kept, damaged = [], 0
        for raw in _lines(self.metrics):
            rec = parse_record(raw)
            if rec is None:
                damaged += 1
            elif rec["step"] <= step:
                kept.append(raw.decode("utf-8") + "\n")
        write_text(self.metrics, "".join(kept), what="the training log")
        return damaged

    @_writes
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        save_state(state, self.checkpoint, what="the checkpoint")

    @_writes
    def save_search(self, outcome: dict[str, Any]) -> None:
        write_text(
            self.search,
            json.dumps(outcome, indent=2) + "\n",
            what="the search outcome",
            digest=True,
        )

    @_writes
    def save_weights(
        self,
        model_state: dict[str, Any],
        controller: dict[str, Any] | None,
        *,
        tables: str | None = None,
    ) -> None:
        """model.pt (``tables``: the directory beside it that holds the sharded tables) and
        controller.pt."""
        content: dict[str, Any] = {"format": MODEL_FORMAT, "state_dict": model_state}
        if tables is not None:
            content["tables"] = tables
        save_state(content, self.model, what="the model")
        if controller is not None:
            save_state(controller, self.controller, what="the controller")

    @_writes
    def save_example_weights(self, arrays: dict[str, Any]) -> None:
        """``example_weights.npz``: a sample of a per-example policy's weights
        (:mod:`autoloss.train.example_weights`)."""
        import numpy as np

        with (
            atomic_path(self.example_weights, what="the example weights") as tmp,
            open(tmp, "wb") as fh,
        ):
            np.savez(fh, **arrays)

    @_writes
    def finish(self, result: RunResult) -> None:
        """Write result.json and drop the checkpoint: the run is complete."""
        text = json.dumps(result.to_dict(), indent=2) + "\n"
        write_text(self.result, text, what="the result", digest=True)
        remove_with_digest(self.checkpoint)
        shutil.rmtree(self.path / self.CHECKPOINT_TABLES, ignore_errors=True)

    @_writes
    def save_placement(self, placement: dict[str, Any]) -> None:
        """``tables.json``: where the sharded embedding tables live."""
        text = json.dumps(placement, indent=2) + "\n"
        write_text(self.path / self.TABLES, text, what="the tables' placement")

    @_writes
    def copy_dataset_reference(self, src: Path) -> None:
        """meta.json and the vocabularies (and side tables) of the dataset at ``src``."""
        dest = self.dataset
        with writing(dest, "the dataset's description"):
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / "meta.json", dest / "meta.json")
            for sub in ("vocab", "side"):  # side: e.g. MovieLens movies table for genres/year
                if (src / sub).is_dir():
                    shutil.copytree(src / sub, dest / sub, dirs_exist_ok=True)

    # ---------------------------------------------------------------- reading
    def load_checkpoint(self) -> dict[str, Any]:
        return _state_dict_file(
            self.checkpoint,
            "checkpoint",
            f"the run cannot resume from it: start it again (autoloss train --out {self.path} "
            "--overwrite)",
        )

    def load_model_state(self) -> dict[str, Any]:
        hint = f"train the run again (autoloss train --out {self.path} --overwrite)"
        state = _state_dict_file(self.model, "model file", hint)
        if state.get("format") != MODEL_FORMAT:
            raise CheckpointError(
                f"model file format {state.get('format')!r} is not {MODEL_FORMAT!r} "
                f"(written by another version of autoloss): {hint}",
                path=self.model,
            )
        return state

    def read_json(self, path: Path) -> dict[str, Any] | None:
        """A JSON file of this run, or None when it does not exist."""
        if not path.is_file():
            return None
        verify_digest(path, path.name, RESULT_HINT)
        try:
            out = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{path.name} is not valid JSON", path=path) from None
        if not isinstance(out, dict):
            raise DataError(f"{path.name} is not a JSON object", path=path)
        return out

    def read_result(self) -> RunResult | None:
        """The run's result.json (any version of it), or None when it has none."""
        content = self.read_json(self.result)
        return None if content is None else RunResult.from_dict(content)


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a ``metrics.jsonl`` (JSON objects with an integer ``step``) and how many
    lines were damaged (not UTF-8, not a JSON object, no integer step); a last line cut short
    by a kill is left out and not counted."""
    records = [parse_record(raw) for raw in _lines(path)]
    return [r for r in records if r is not None], sum(r is None for r in records)


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """One line of ``metrics.jsonl`` as a record, or None when it is damaged."""
    try:
        rec = json.loads(raw.decode("utf-8"))
        rec["step"] = int(rec["step"])
    except (ValueError, TypeError, KeyError, OverflowError, AttributeError):
        return None
    return rec if isinstance(rec, dict) else None


def _lines(path: Path) -> list[bytes]:
    """The non-empty lines of ``path``, without a last line that lacks its newline."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    lines = lines[:-1]  # after the last newline: empty, or a line torn by a kill
    return [line for line in lines if line.strip()]


def _state_dict_file(path: Path, what: str, hint: str) -> dict[str, Any]:
    state = load_state(path, what, hint)
    if not isinstance(state, dict):
        raise CheckpointError(f"not an autoloss {what}", path=path)
    return state
