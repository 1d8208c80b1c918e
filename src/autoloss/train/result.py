"""``result.json``: the typed, versioned outcome of a finished run (:class:`RunResult`).

The trainer builds one (:meth:`Trainer.finish`), the run directory writes it
(:meth:`RunDir.finish`) and every reader (the tables of ``compare``, the report, ``autoloss
train``'s summary) reads it back with :meth:`RunResult.from_dict`, by attribute. The JSON keys and
values are those result.json always had, plus ``format``; files written before ``format`` existed
(and partial ones, such as the fabricated runs of the tests) read back: a missing key is
``None`` (or empty), a key this version does not know is kept in :attr:`RunResult.extra` and
written back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

#: The version of result.json's layout (its ``format`` key; files without one are this layout).
RESULT_FORMAT = "autoloss-result-1"

#: Keys the trainer writes only when they are not zero or empty (absent ones read back as such).
_WHEN_SET = ("nonfinite_skipped", "warnings")


@dataclass
class RunResult:
    """Final metrics and a summary of a run; ``to_dict()`` is result.json's content."""

    test: dict[str, float] = field(default_factory=dict)
    valid: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    best_step: int | None = None
    epochs: int | None = None
    steps: int | None = None
    train_rows: int | None = None
    train_seconds: float | None = None
    train_rows_per_second: float | None = None
    method: str | None = None
    model: str | None = None
    seed: int | None = None
    task: str | None = None
    candidates: list[str] = field(default_factory=list)
    device: str | None = None
    threads: int | None = None
    #: the loss policy's summary (``describe()``) and what an outer loop adds (the search)
    policy: dict[str, Any] = field(default_factory=dict)
    autoloss_version: str | None = None
    #: the processes of a distributed run (absent for one process)
    world_size: int | None = None
    #: batches skipped because their loss was not finite (``train.on_nonfinite=skip``)
    nonfinite_skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    #: the realised data conditions (docs/data.md), when any is set
    conditions: dict[str, Any] | None = None
    #: keys of the file this version does not know, kept as they were
    extra: dict[str, Any] = field(default_factory=dict)
    format: str = RESULT_FORMAT

    # ------------------------------------------------------------------ derived
    @property
    def search_seconds(self) -> float | None:
        """Seconds of ``--loss search``'s outer loop (top level in old files, else in policy)."""
        value = self.extra.get("search_seconds", self.policy.get("search_seconds"))
        return None if value is None else float(value)

    def metric(self, split: str, name: str) -> float:
        """``split``'s (``test`` or ``valid``) metric ``name``; NaN when it was not recorded."""
        value = (self.test if split == "test" else self.valid).get(name)
        return math.nan if value is None else float(value)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        """result.json's content (key order as the trainer always wrote it, ``format`` last);
        a key that is ``None`` (absent when read) is left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("extra", "format"):
                continue
            value = getattr(self, f.name)
            if value is None or (f.name in _WHEN_SET and not value):
                continue
            out[f.name] = value
        out.update(self.extra)
        out["format"] = self.format
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        """A result read back from result.json's content (any version of it; see the module)."""
        if not isinstance(d, dict):
            raise TypeError("result.json is not a JSON object")
        known = {f.name for f in fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in d.items() if k in known and v is not None}
        for name in ("test", "valid", "policy"):
            if not isinstance(values.get(name, {}), dict):
                values.pop(name)
        for name in ("candidates", "warnings"):
            if not isinstance(values.get(name, []), list):
                values.pop(name)
        values["extra"] = {k: v for k, v in d.items() if k not in known}
        return cls(**values)

    # result.json's content by key, read-only, for callers that read the file's dict
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)
