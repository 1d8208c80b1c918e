"""Experiment plans: the grids of a study in one YAML file, run by ``autoloss compare --plan``.

A plan is a family of ``compare`` grids (one table family of ``docs/results.md``), declared with
compare's own options instead of a shell script::

    description: what the family measures
    datasets:                        # optional: NAME -> a path, or options of `autoloss prepare`
      frappe: {path: data/frappe_x1}                      # (--dataset frappe=PATH overrides)
      implicit: {prepare: --format movielens --task implicit}   # made under OUT/data/implicit
    defaults:                        # compare's options (long names) for every grid
      data: frappe                   # a dataset's name, or a path
      models: deepfm
      seeds: 5
      epochs: 30
      threads: 1
      jobs: 2
      set: {train.log_every: 20}
    conditions:                      # optional: NAME -> options (the data conditions)
      clean: {}
      sym30: {set: {data.label_noise: 0.3, data.noise_mode: symmetric}}
    experiments:                     # NAME -> options (+ `conditions: [NAME, ...]`: only those)
      methods: {methods: [ce, gce, mae]}
      bounded: {methods: [uniform, darts], set: {loss.candidates: ce,gce,mae}}

Every (condition, experiment) pair is one grid, trained into ``OUT/<condition>-<experiment>``
(``OUT/<experiment>`` without conditions), the layout ``benchmarks/evidence_table.py`` reads. A
grid's options are the defaults, then the condition's, then the experiment's (a later one
replaces an earlier one, key by key within ``set`` and ``grid``). Values: a scalar, a list
(joined with commas), ``set`` a mapping of settings, ``grid`` a mapping of a key to its values (a
list setting's values as lists). :func:`plan_runs` turns the plan into compare command lines.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss import yamlfile
from autoloss.errors import ConfigError

PLAN_KEYS = ("description", "datasets", "defaults", "conditions", "experiments")
#: compare options a plan may not give: where and how the grids run is the command line's.
COMMAND_LINE_ONLY = frozenset(
    {"out", "shard", "executor", "address", "cpus-per-run", "gpus-per-run", "overwrite", "plan"}
)
#: what compare sets per run (a plan names them with models / methods)
PER_RUN = {"model": "models", "loss": "methods"}


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str = ""
    prepare: tuple[str, ...] = ()


@dataclass
class Plan:
    path: Path
    description: str = ""
    datasets: dict[str, Dataset] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedGrid:
    """One grid of a plan: its name (its directory under OUT) and its compare options."""

    name: str
    argv: list[str]


def _mapping(value: Any, what: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what}: expected a mapping, got {type(value).__name__}", path=path)
    return {str(k): v for k, v in value.items()}


def _name(name: str, what: str, path: Path) -> str:
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise ConfigError(f"{what} {name!r}: not a usable directory name", path=path)
    return name


def load_plan(path: str | Path) -> Plan:
    """The plan in ``path``; :class:`ConfigError` (one line, naming the file) if it is not one."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the plan ({exc.strerror or exc})", path=p) from None
    raw = _mapping(yamlfile.load(text, path=p, what="plan"), "the plan", p)
    unknown = sorted(set(raw) - set(PLAN_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown plan key {', '.join(unknown)} (expected {', '.join(PLAN_KEYS)})", path=p
        )
    plan = Plan(p, str(raw.get("description") or ""))
    for name, spec in _mapping(raw.get("datasets"), "datasets", p).items():
        spec = _mapping(spec, f"datasets.{name}", p)
        if set(spec) - {"path", "prepare"} or len(spec) != 1:
            raise ConfigError(f"datasets.{name}: give either path: or prepare:", path=p)
        prep = spec.get("prepare")
        words = shlex.split(prep) if isinstance(prep, str) else [str(w) for w in prep or []]
        plan.datasets[_name(name, "dataset", p)] = Dataset(
            name, str(spec.get("path") or ""), tuple(words)
        )
    plan.defaults = _options(raw.get("defaults"), "defaults", p)
    for name, opts in _mapping(raw.get("conditions"), "conditions", p).items():
        plan.conditions[_name(name, "condition", p)] = _options(opts, f"conditions.{name}", p)
    experiments = _mapping(raw.get("experiments"), "experiments", p)
    if not experiments:
        raise ConfigError("experiments: the plan names no grid", path=p)
    for name, opts in experiments.items():
        opts = _mapping(opts, f"experiments.{name}", p)
        only = opts.pop("conditions", None)
        checked = _options(opts, f"experiments.{name}", p)
        if only is not None:
            names = [only] if isinstance(only, str) else list(only)
            missing = [str(c) for c in names if str(c) not in plan.conditions]
            if missing:
                raise ConfigError(
                    f"experiments.{name}.conditions: no condition {', '.join(missing)}", path=p
                )
            checked["conditions"] = [str(c) for c in names]
        plan.experiments[_name(name, "experiment", p)] = checked
    return plan


def _options(value: Any, what: str, path: Path) -> dict[str, Any]:
    opts = {k.replace("_", "-"): v for k, v in _mapping(value, what, path).items()}
    for key in opts:
        if key in COMMAND_LINE_ONLY:
            raise ConfigError(
                f"{what}.{key}: not a plan option (give --{key} on the command line)", path=path
            )
        if key in PER_RUN:
            raise ConfigError(
                f"{what}.{key}: compare sets it per run: give {PER_RUN[key]}", path=path
            )
    for key in ("set", "grid"):
        if key in opts:
            opts[key] = _mapping(opts[key], f"{what}.{key}", path)
    return opts


def _merge(*parts: dict[str, Any]) -> dict[str, Any]:
    """The defaults, then the condition's, then the experiment's options: a later part replaces
    an option (a ``set`` or ``grid`` key) of an earlier one."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if key == "conditions":
                continue
            if isinstance(value, dict):
                out[key] = {**out.get(key, {}), **value}
            else:
                out[key] = value
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value)
    return str(value)


def dataset_path(plan: Plan, name: str, out: Path, given: Mapping[str, str]) -> str:
    """Where the dataset ``name`` of the plan is: ``given`` (``--dataset``), its ``path:``, or
    ``OUT/data/NAME`` for one the plan prepares."""
    ds = plan.datasets[name]
    if name in given:
        return given[name]
    return ds.path or str(out / "data" / name)


def _argv(plan: Plan, opts: dict[str, Any], out: Path, given: Mapping[str, str]) -> list[str]:
    argv: list[str] = []
    for key, value in opts.items():
        if key == "set":
            argv += [a for k, v in value.items() for a in ("--set", f"{k}={_text(v)}")]
        elif key == "grid":
            for k, vs in value.items():
                values = vs if isinstance(vs, list) else [vs]
                argv += ["--grid", f"{k}=" + ";".join(_text(v) for v in values)]
        elif key == "data" and str(value) in plan.datasets:
            argv += ["--data", dataset_path(plan, str(value), out, given)]
        elif value is True:
            argv.append(f"--{key}")
        elif value is False or value is None:
            continue
        else:
            argv += [f"--{key}", _text(value)]
    return argv


def plan_runs(
    plan: Plan,
    out: str | Path,
    *,
    datasets: Mapping[str, str] | None = None,
    only: Sequence[str] = (),
) -> list[PlannedGrid]:
    """Every grid of ``plan`` (conditions outer, experiments inner, in the file's order) with its
    compare options, ``--out OUT/<name>`` included; ``datasets``: NAME -> path (``--dataset``);
    ``only``: grid or condition names to keep (all when empty)."""
    out = Path(out)
    given = dict(datasets or {})
    unknown = sorted(set(given) - set(plan.datasets))
    if unknown:
        raise ConfigError(
            f"--dataset {', '.join(unknown)}: the plan has no such dataset", path=plan.path
        )
    conditions = plan.conditions or {"": {}}
    grids: list[PlannedGrid] = []
    for cond, cond_opts in conditions.items():
        for exp, exp_opts in plan.experiments.items():
            if cond and cond not in exp_opts.get("conditions", [cond]):
                continue
            name = f"{cond}-{exp}" if cond else exp
            if only and name not in only and cond not in only:
                continue
            opts = _merge(plan.defaults, cond_opts, exp_opts)
            grids.append(
                PlannedGrid(name, [*_argv(plan, opts, out, given), "--out", str(out / name)])
            )
    if only:
        names = {g.name for g in grids} | set(conditions)
        missing = [n for n in only if n not in names and not any(g.name == n for g in grids)]
        if missing:
            raise ConfigError(
                f"--only {', '.join(missing)}: no such grid or condition", path=plan.path
            )
    return grids


def datasets_to_prepare(plan: Plan, grids: Sequence[PlannedGrid], out: str | Path,
                        given: Mapping[str, str]) -> list[tuple[Path, list[str]]]:  # fmt: skip
    """``(directory, prepare options)`` of every dataset the plan prepares and ``grids`` use,
    unless ``--dataset`` gave it."""
    used = {a for g in grids for a in g.argv}
    todo = []
    for name, ds in plan.datasets.items():
        where = dataset_path(plan, name, Path(out), given)
        if ds.prepare and name not in given and where in used:
            todo.append((Path(where), list(ds.prepare)))
    return todo
