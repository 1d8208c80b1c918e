"""Reading what a run wrote (``metrics.jsonl``, ``result.json``) into curves for plotting.

A run's validation records become a :class:`Curve` (metrics against training rows); its policy
records (mean candidate probabilities, τ) another. Curves of several seeds average pointwise on
the rows at which they were recorded (early-stopped seeds simply stop contributing).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoloss import yamlfile
from autoloss.errors import ConfigError, DataError
from autoloss.files import read_verified_text
from autoloss.train.result import RunResult
from autoloss.train.rundir import RESULT_HINT, read_records


@dataclass
class RunRecords:
    run_dir: Path
    config: dict[str, Any]
    result: RunResult | None
    evals: list[dict[str, Any]]
    policy: list[dict[str, Any]]

    @property
    def method(self) -> str:
        method = self.result.method if self.result else None
        return str(method or self.config.get("loss", {}).get("method", "?"))

    @property
    def model(self) -> str:
        model = self.result.model if self.result else None
        return str(model or self.config.get("model", {}).get("name", "?"))

    @property
    def candidates(self) -> list[str]:
        if self.result and self.result.candidates:
            return [str(c) for c in self.result.candidates]
        return [str(c) for c in self.config.get("loss", {}).get("candidates", [])]


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validation and policy records of ``metrics.jsonl``, by step.

    A resumed run may repeat the records of its interrupted epoch; the last one of a step wins.
    A truncated last line (a run killed while writing) and damaged lines are ignored.
    """
    evals: dict[int, dict[str, Any]] = {}
    policy: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return [], []
    for rec in read_records(path)[0]:  # damaged lines (not UTF-8, not JSON) are left out
        if rec.get("type") == "eval" and rec.get("split", "valid") == "valid":
            evals[rec["step"]] = rec
        elif rec.get("type") == "policy":
            policy[rec["step"]] = rec
    return [evals[k] for k in sorted(evals)], [policy[k] for k in sorted(policy)]


def read_run(run_dir: str | Path) -> RunRecords:
    rd = Path(run_dir)
    if not (rd / "config.yaml").is_file() and not (rd / "result.json").is_file():
        raise DataError("not a run directory (no config.yaml or result.json)", path=rd)
    config: dict[str, Any] = {}
    if (rd / "config.yaml").is_file():
        try:
            text = (rd / "config.yaml").read_text(encoding="utf-8", errors="replace")
            config = yamlfile.load(text, what="config.yaml", invalid={}) or {}
        except ConfigError:  # nested too deeply, or an alias bomb: not a config.yaml we wrote
            config = {}
    result = None
    if (rd / "result.json").is_file():
        try:
            text = read_verified_text(rd / "result.json", "result.json", RESULT_HINT)
            result = RunResult.from_dict(json.loads(text))
        except ValueError:
            raise DataError("result.json is not valid JSON", path=rd / "result.json") from None
        except TypeError:
            raise DataError("result.json is not a JSON object", path=rd / "result.json") from None
    evals, policy = read_metrics(rd / "metrics.jsonl")
    return RunRecords(rd, config, result, evals, policy)


@dataclass
class Curve:
    """Series against training rows; ``std`` and ``n`` describe the spread over seeds."""

    rows: np.ndarray
    values: dict[str, np.ndarray]
    std: dict[str, np.ndarray] = field(default_factory=dict)
    n: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def has(self, key: str) -> bool:
        return key in self.values and bool(np.isfinite(self.values[key]).any())


def curve_from_records(
    records: Sequence[dict[str, Any]], keys: Sequence[str] | None = None
) -> Curve:
    """One run's records as a curve (keys: every numeric key, unless given)."""
    if keys is None:
        keys = sorted(
            {
                k
                for r in records
                for k, v in r.items()
                if isinstance(v, int | float)
                and not isinstance(v, bool)
                and k not in ("step", "rows")
            }
        )
    rows = np.array([float(r.get("rows", r.get("step", 0))) for r in records])
    values = {k: np.array([_num(r.get(k)) for r in records]) for k in keys}
    return Curve(rows, values)


def _num(v: Any) -> float:
    try:
        return math.nan if v is None else float(v)
    except (TypeError, ValueError):
        return math.nan


def mean_curve(curves: Sequence[Curve], min_fraction: float = 0.5) -> Curve:
    """Pointwise mean (and std) over curves at each recorded number of rows.

    Only rows that at least ``min_fraction`` of the curves reach are kept: past them the mean would
    be that of the few seeds still training (early stopping) and jump.
    """
    curves = [c for c in curves if len(c)]
    if not curves:
        return Curve(np.zeros(0), {})
    if len(curves) == 1:
        c = curves[0]
        return Curve(c.rows, c.values, {}, np.ones(len(c), dtype=int))
    rows = np.unique(np.concatenate([c.rows for c in curves]))
    keys = sorted(set().union(*(c.values for c in curves)))
    values: dict[str, np.ndarray] = {}
    std: dict[str, np.ndarray] = {}
    n = np.zeros(len(rows), dtype=int)
    for c in curves:
        n += np.isin(rows, c.rows)
    keep = n >= max(1, math.ceil(min_fraction * len(curves)))
    rows, n = rows[keep], n[keep]
    curves = [
        Curve(
            c.rows[np.isin(c.rows, rows)],
            {k: v[np.isin(c.rows, rows)] for k, v in c.values.items()},
        )
        for c in curves
    ]
    for k in keys:
        grid = np.full((len(curves), len(rows)), np.nan)
        for i, c in enumerate(curves):
            if k in c.values:
                grid[i, np.searchsorted(rows, c.rows)] = c.values[k]
        with warnings.catch_warnings():  # columns no seed recorded at some rows: nan, silently
            warnings.simplefilter("ignore", RuntimeWarning)
            values[k] = np.nanmean(grid, axis=0)
            std[k] = np.nanstd(grid, axis=0)
    return Curve(rows, values, std, n)


def probability_keys(
    curve: Curve, candidates: Sequence[str]
) -> tuple[list[str], dict[int, list[str]]]:
    """Overall ``p_<cand>`` keys and, per class c, the ``p_<cand>_y<c>`` keys a curve holds."""
    overall = [f"p_{c}" for c in candidates if curve.has(f"p_{c}")]
    per_class: dict[int, list[str]] = {}
    for key in curve.values:
        for cand in candidates:
            prefix = f"p_{cand}_y"
            if key.startswith(prefix) and key[len(prefix) :].isdigit() and curve.has(key):
                per_class.setdefault(int(key[len(prefix) :]), []).append(key)
    return overall, dict(sorted(per_class.items()))


def varies(curve: Curve, keys: Sequence[str], tol: float = 1e-6) -> bool:
    """Whether any of ``keys`` changes over training (fixed weights do not)."""
    for k in keys:
        v = curve.values.get(k)
        if v is not None and np.isfinite(v).any() and float(np.nanmax(v) - np.nanmin(v)) > tol:
            return True
    return False
