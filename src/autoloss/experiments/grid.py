"""The ``--grid`` of an experiment: any setting as a dimension, its conditions and their names.

``--grid KEY=V1,V2,...`` (repeatable) makes a setting a grid dimension alongside models, methods
and seeds; every combination of values is one *condition*. Values are checked as ``--set`` checks
them; a condition is named in run directories (``label_noise=0.2-noise_mode=pos2neg``) and in
tables (``label_noise=0.2, noise_mode=pos2neg``).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from typing import Any

from autoloss.errors import ConfigError
from autoloss.train.config import NEUTRAL_SETTINGS, RunConfig

#: Settings that do not change what a run computes: an experiment may be re-opened with other
#: values (the evaluation batch size changes only how predictions are batched).
NEUTRAL_KEYS = tuple(sorted(NEUTRAL_SETTINGS | {"data.eval_batch_size"}))

# Grid keys that are axes of their own (or that would change the dataset), and the neutral keys.
_NOT_GRID_KEYS = {
    "model.name": "use --models",
    "loss.method": "use --methods",
    "train.seed": "use --seed and --seeds",
    "out": "runs are named by the experiment",
    "data.path": "one experiment is on one dataset",
    "data.task": "one experiment is on one dataset",
    **{k: "it does not change what a run computes" for k in NEUTRAL_KEYS if k != "out"},
}
#: Longest condition part of a run directory name (file systems allow 255 bytes for the name).
_MAX_CONDITION_CHARS = 160

#: One grid dimension: a dotted setting and its values (as ``RunConfig.get`` returns them).
GridAxis = tuple[str, list[Any]]
#: The values of every grid key for one grid point, in grid order: ``((key, value), ...)``.
Condition = tuple[tuple[str, Any], ...]


def grid_conditions(grid: Sequence[GridAxis]) -> list[Condition]:
    """Every combination of the grid's values (the last key varies fastest); ``[()]`` without
    a grid."""
    keys = [k for k, _ in grid]
    return [tuple(zip(keys, values)) for values in itertools.product(*(vs for _, vs in grid))]


def value_text(value: Any) -> str:
    """A grid value as written in names and tables: ``0.2``, ``0`` (for 0.0), ``true``,
    ``null``, a list as ``focal+kl``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, list | tuple):
        return "+".join(value_text(v) for v in value)
    return str(value)


def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """A short name per grid key: its last part (``label_noise``) unless two keys share it."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def condition_values(condition: Condition, keys: Sequence[str]) -> dict[str, str]:
    """``{short key: value text}`` of a condition (the columns of its tables)."""
    short = short_keys(keys)
    return {short[k]: value_text(v) for k, v in condition}


def condition_name(condition: Condition, keys: Sequence[str]) -> str:
    """The condition in run names: ``label_noise=0.2-noise_mode=pos2neg``, file-name safe (any
    character but letters, digits and ``_.=+-`` becomes ``_``); empty without a grid."""
    text = "-".join(f"{k}={v}" for k, v in condition_values(condition, keys).items())
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def condition_label(condition: Condition, keys: Sequence[str]) -> str:
    """The condition in tables and ``results.csv``: ``label_noise=0.2, noise_mode=pos2neg``."""
    return ", ".join(f"{k}={v}" for k, v in condition_values(condition, keys).items())


def _list_key(key: str) -> bool:
    """Whether ``key`` holds a list (``model.mlp``, ``loss.candidates``): its values are
    separated by ``;`` only, a ``,`` being part of a value."""
    parts = key.split(".")
    section = getattr(RunConfig(), parts[0], None) if len(parts) == 2 else None
    if not dataclasses.is_dataclass(section):
        return False
    types = {f.name: str(f.type) for f in dataclasses.fields(section)}
    return types.get(parts[1], "").startswith("list")


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """The ``--grid`` options, ``KEY=V1,V2,...``, as ``[(key, [text, ...]), ...]``.

    Values are separated by ``,``; when the text holds a ``;``, and always for a key that holds
    a list (``model.mlp``, ``loss.candidates``), by ``;`` only, so that a value may contain
    commas: ``--grid 'loss.candidates=focal,kl;focal,kl,hinge,ce'``. Repeating ``--grid`` with a
    key adds values to it (``--grid model.mlp=64,64 --grid model.mlp=128``). The values are
    checked by :func:`check_grid`.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {item}: expected KEY=V1,V2,...")
        values = [v.strip() for v in text.split(";" if ";" in text or _list_key(key) else ",")]
        if any(not v for v in values):
            raise ConfigError(
                f"--grid {item}: an empty value (write null for an empty setting; values are"
                " separated by ',', or by ';' when a value holds commas)"
            )
        out.setdefault(key, []).extend(values)
    return list(out.items())


def _grid_key(key: str) -> str:
    """The key as :meth:`RunConfig.get` reads it (``model.foo`` is ``model.extra.foo``)."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "model":
        if parts[1] not in {f.name for f in dataclasses.fields(RunConfig().model)}:
            return f"model.extra.{parts[1]}"
    return key


def check_grid(base: RunConfig, grid: Sequence[tuple[str, Sequence[Any]]]) -> list[GridAxis]:
    """Every grid key settable and every value valid (as ``--set`` checks them), no key or value
    twice, run names unique: the values as the runs' configurations will hold them."""
    out: list[GridAxis] = []
    for raw_key, raw_values in grid:
        key = _grid_key(str(raw_key).strip())
        why = _NOT_GRID_KEYS.get(key)
        if why:
            raise ConfigError(f"--grid {key}: not a grid key ({why})")
        if key == "model.extra":
            raise ConfigError("--grid model.extra: give one hyper-parameter, model.extra.NAME")
        if key in (k for k, _ in out):
            raise ConfigError(f"--grid {key}: listed twice")
        if not raw_values:
            raise ConfigError(f"--grid {key}: no values")
        values: list[Any] = []
        for raw in raw_values:
            cfg = base.copy()
            cfg.set(key, raw, source=f"--grid {key}")  # an unknown key or bad value: one line
            value = cfg.get(key)
            if any(value == v and type(value) is type(v) for v in values):
                raise ConfigError(f"--grid {key}: value {value_text(value)} listed twice")
            values.append(value)
        out.append((key, values))
    keys = [k for k, _ in out]
    conditions = grid_conditions(out)
    labels = [condition_name(c, keys) for c in conditions]
    if len(set(labels)) < len(labels):
        dup = sorted({lb for lb in labels if labels.count(lb) > 1})
        raise ConfigError(f"--grid: values that give the same run name ({dup[0]}); use others")
    long = [lb for lb in labels if len(lb) > _MAX_CONDITION_CHARS]
    if long:
        raise ConfigError(f"--grid: values too long for a run name ({long[0][:60]}...)")
    return out


def grid_signature(grid: Sequence[GridAxis]) -> dict[str, list[str]]:
    """The grid as compared on re-opening: per key, its values (order does not matter)."""
    return {k: sorted(repr(v) for v in vs) for k, vs in grid}


def grid_text(grid: Sequence[GridAxis]) -> str:
    if not grid:
        return "none"
    return "; ".join(f"{k}={','.join(value_text(v) for v in vs)}" for k, vs in grid)
