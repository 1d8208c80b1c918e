"""``compare``: a grid of models × loss methods × seeds (× conditions) on one prepared dataset.

An experiment directory::

    EXP_DIR/experiment.yaml        the grid and the base configuration (every run = base + cell)
    EXP_DIR/runs/<model>-<method>-s<seed>[-<condition>]/   one ordinary run directory per run
    EXP_DIR/runs/<run>.lock        JSON {pid, host, started, ...} of the process training it
    EXP_DIR/runs/.guard            flock'd for milliseconds around lock and table changes
    EXP_DIR/results.csv            one row per finished run
    EXP_DIR/table.md               mean ± std, Welch and paired t-tests, efficiency

Conditions (``--grid KEY=V1,V2,...``, :func:`parse_grid`): any setting a run's ``--set`` takes
becomes a further dimension of the grid; each combination of their values is a *condition*,
applied with :meth:`RunConfig.set` on every run's configuration and named in its directory
(``deepfm-ce-s2021-label_noise=0.2``). Without conditions the names are those of before.

Running the same command again resumes: runs with ``result.json`` are skipped, an interrupted run
with a checkpoint continues from it, and any other leftover directory is restarted cleanly.
``jobs > 1`` trains runs in spawned worker processes; an
:class:`~autoloss.experiments.executors.Executor` (``--executor ray``: Ray tasks) may run them
elsewhere, always through the same :func:`train_locked`. Every run computes with the experiment's
thread count (``train.num_threads``, :data:`COMPARE_THREADS` when not given), whatever the executor,
``--jobs`` or ``--shard``: the table does not depend on how the grid was spread. ``--shard I/N`` (:func:`shard_runs`)
trains the I-th of N disjoint parts of the grid (job arrays), into the same directory.

Several ``compare`` processes may share one experiment directory: the process that trains a run
(this one, or its worker) holds ``runs/<run>.lock`` while it does (:class:`RunLock`); another
process skips that run and reports it as left to the holder. Every file is written atomically, and
the tables are rebuilt from every finished run on disk, so the last process to finish writes
complete tables.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoloss import __version__, yamlfile
from autoloss.errors import AutolossError, CheckpointError, ConfigError
from autoloss.experiments.executors import Executor, RunCall, local_executor
from autoloss.experiments.grid import (
    NEUTRAL_KEYS,
    Condition,
    GridAxis,
    check_grid,
    condition_label,
    condition_name,
    condition_values,
    grid_conditions,
    grid_signature,
    grid_text,
    value_text,
)
from autoloss.experiments.tables import (
    ConditionSummary,
    ResultRow,
    Summary,
    baseline_method,
    render_grid_markdown,
    render_markdown,
    result_row,
    summarize,
    write_results_csv,
)
from autoloss.files import TMP_SUFFIX, atomic_output, make_dirs, read_verified_text, write_text
from autoloss.locks import RunLock, describe_holder, guard
from autoloss.train.config import MAX_SEED, RunConfig
from autoloss.train.result import RunResult
from autoloss.train.rundir import RESULT_HINT, RunDir

#: CPU threads of every run of a grid when ``--threads`` is not given: one, so that a serial grid,
#: ``--jobs N``, shards and Ray tasks compute the same table (and N runs use N cores side by side).
COMPARE_THREADS = 1

#: The paper's protocol (Table 2): every baseline, DeepFM and IPNN, 5 seeds.
PAPER_METHODS: tuple[str, ...] = (
    "ce",
    "focal",
    "kl",
    "hinge",
    "uniform",
    "search",
    "darts",
    "slf",
    "autoloss",
)
PAPER_MODELS: tuple[str, ...] = ("deepfm", "ipnn")
PAPER_SEEDS = 5
EXPERIMENT_FORMAT = "autoloss-experiment-1"

Log = Callable[[str], None]

logger = logging.getLogger(__name__)


class ExperimentError(AutolossError):
    """Some runs of an experiment failed (the others finished and are tabulated)."""


def run_name(model: str, method: str, seed: int, condition: str = "") -> str:
    """``<model>-<method>-s<seed>``, then ``-<condition>`` (:func:`condition_label`) if any."""
    safe = method.replace(":", "_").replace(",", "_").replace("/", "_")
    return f"{model}-{safe}-s{seed}" + (f"-{condition}" if condition else "")


@dataclass(frozen=True)
class PlannedRun:
    model: str
    method: str
    seed: int
    run_dir: Path
    condition: Condition = ()

    @property
    def name(self) -> str:
        return self.run_dir.name

    def config(self, base: RunConfig) -> RunConfig:
        cfg = base.copy()
        cfg.model.name = self.model
        cfg.loss.method = self.method
        cfg.train.seed = self.seed
        for key, value in self.condition:
            cfg.set(key, value, source="--grid")
        cfg.out = str(self.run_dir)
        return cfg

    def state(self) -> str:
        """``done`` (result.json), ``interrupted`` (checkpoint.pt), ``leftover`` or ``new``."""
        return run_state(self.run_dir)


def run_state(run_dir: Path) -> str:
    """``done`` (result.json), ``interrupted`` (checkpoint.pt), ``leftover`` or ``new``."""
    rd = RunDir(run_dir)
    if rd.result.is_file():
        try:
            json.loads(rd.result.read_text(encoding="utf-8"))
            return "done"
        except (OSError, ValueError):
            return "leftover"
    if rd.checkpoint.is_file():
        return "interrupted"
    return "leftover" if run_dir.exists() else "new"


@dataclass
class Experiment:
    """The grid and the base configuration of a comparison."""

    out: Path
    models: list[str]
    methods: list[str]
    seeds: list[int]
    base: RunConfig
    task: str = ""
    #: The conditions' dimensions (``--grid``), in order; empty: one condition, the base.
    grid: list[GridAxis] = field(default_factory=list)

    def __post_init__(self) -> None:
        # every run's thread count fixed here, not by where it runs (experiment.yaml records it)
        self.base.train.num_threads = self.base.train.num_threads or COMPARE_THREADS

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"

    @property
    def grid_keys(self) -> list[str]:
        return [k for k, _ in self.grid]

    def conditions(self) -> list[Condition]:
        """Every combination of the grid's values (the last key varies fastest); ``[()]``
        without a grid."""
        return grid_conditions(self.grid)

    def label(self, condition: Condition) -> str:
        """The condition as tables show it (``label_noise=0.2, noise_mode=pos2neg``)."""
        return condition_label(condition, self.grid_keys)

    def plan(self) -> list[PlannedRun]:
        """Every run, seed-major so that a partial experiment has whole seeds for every cell."""
        keys = self.grid_keys
        return [
            PlannedRun(
                model,
                method,
                seed,
                self.runs_dir / run_name(model, method, seed, condition_name(cond, keys)),
                cond,
            )
            for seed in self.seeds
            for cond in self.conditions()
            for model in self.models
            for method in self.methods
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": EXPERIMENT_FORMAT,
            "models": list(self.models),
            "methods": list(self.methods),
            "seeds": list(self.seeds),
            "grid": [{"key": k, "values": list(vs)} for k, vs in self.grid],
            "task": self.task,
            "data": self.base.data.path,
            "config": self.base.to_dict(),
            "autoloss_version": __version__,
        }

    def save(self) -> None:
        make_dirs(self.out, "the experiment directory")
        with atomic_output(
            self.out / "experiment.yaml", "w", what="the experiment's settings", encoding="utf-8"
        ) as fh:
            yaml.safe_dump(self.to_dict(), fh, sort_keys=False)

    @classmethod
    def load(cls, out: str | Path) -> Experiment:
        p = Path(out) / "experiment.yaml"
        if not p.is_file():
            raise ConfigError("not an experiment directory (no experiment.yaml)", path=Path(out))
        try:
            raw = yamlfile.load(p.read_text(encoding="utf-8"), path=p, what="experiment.yaml")
            fmt = raw.get("format") if isinstance(raw, dict) else None
            if fmt != EXPERIMENT_FORMAT:
                raise ConfigError(
                    f"experiment format {fmt!r} is not {EXPERIMENT_FORMAT!r} (written by another "
                    "version of autoloss): use another --out, or the version that wrote it",
                    path=p,
                )
            base = RunConfig.from_dict(raw["config"], source=str(p))
            return cls(
                Path(out),
                [str(m) for m in raw["models"]],
                [str(m) for m in raw["methods"]],
                [int(s) for s in raw["seeds"]],
                base,
                str(raw.get("task") or ""),
                [(str(g["key"]), list(g["values"])) for g in raw.get("grid") or []],
            )
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"invalid experiment file ({type(exc).__name__}: {exc})", path=p
            ) from None

    def title(self) -> str:
        data = Path(self.base.data.path).name if self.base.data.path else "embedded MovieLens"
        return f"Comparison on {data}"

    def notes(self) -> list[str]:
        c = self.base
        return [
            f"data: `{c.data.path}` (task {self.task or 'binary'})",
            f"models: {', '.join(self.models)}; methods: {', '.join(self.methods)}",
            f"max epochs {c.train.epochs} (early stopping patience {c.train.patience} on validation AUC),"
            f" batch {c.optim.batch_size}, lr {c.optim.lr}, candidates {','.join(c.loss.candidates)}"
            + (f", max steps {c.train.max_steps}" if c.train.max_steps else ""),
        ] + (
            [
                "conditions (`--grid`): "
                + "; ".join(
                    f"`{k}` = {', '.join(value_text(v) for v in vs)}" for k, vs in self.grid
                )
            ]
            if self.grid
            else []
        )


#: The most seeds one experiment may ask for (more is a typo: ten are the protocol's headline).
MAX_SEEDS = 10_000


def experiment_from_config(
    base: RunConfig,
    out: str | Path,
    *,
    models: Sequence[str] = PAPER_MODELS,
    methods: Sequence[str] = PAPER_METHODS,
    num_seeds: int = PAPER_SEEDS,
    grid: Sequence[tuple[str, Sequence[Any]]] = (),
) -> Experiment:
    """The grid for ``base`` (its seed is the base seed: seeds are base + 0 .. base + n-1).

    ``grid``: the conditions' dimensions, ``[(key, values), ...]`` (:func:`parse_grid` reads
    them from ``--grid``); every key and value is checked here (:func:`check_grid`).
    """
    if not 1 <= num_seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {num_seeds}: give 1..{MAX_SEEDS} seeds")
    if base.train.seed + num_seeds - 1 > MAX_SEED:
        raise ConfigError(
            f"--seeds {num_seeds} from --seed {base.train.seed} goes past the largest seed "
            f"{MAX_SEED}: start lower"
        )
    models = [m.strip() for m in models if m.strip()]
    methods = [m.strip() for m in methods if m.strip()]
    if not models:
        raise ConfigError("--models: need at least one model")
    if not methods:
        raise ConfigError("--methods: need at least one method")
    for label, names in (("--models", models), ("--methods", methods)):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{label}: listed twice: {', '.join(dup)}")
    seeds = [base.train.seed + i for i in range(num_seeds)]
    checked = check_grid(base, grid)
    return Experiment(Path(out), models, methods, seeds, base.copy(), grid=checked)


def _check_conditions(exp: Experiment) -> None:
    """Apply every condition's data settings to the dataset once (the first seed), so that a
    condition the data cannot meet (``pos2neg`` on multi-class data, too few positives for a
    ``pos_rate``) fails before any run."""
    if not any(k.startswith("data.") for k in exp.grid_keys):
        return
    from autoloss.train.builder import run_dataset

    seen: set[str] = set()
    for cond in exp.conditions():
        data_part = tuple((k, v) for k, v in cond if k.startswith("data."))
        if repr(data_part) in seen:
            continue
        seen.add(repr(data_part))
        cfg = PlannedRun(exp.models[0], exp.methods[0], exp.seeds[0], exp.out, cond).config(
            exp.base
        )
        try:
            run_dataset(cfg)
        except AutolossError as exc:
            raise ConfigError(f"--grid {exp.label(cond)}: {exc}") from None


#: Per-run settings of an experiment's base: every run replaces them.
_PER_RUN_KEYS = frozenset({"model.name", "loss.method", "train.seed"})


def _base_differences(old: RunConfig, new: RunConfig, grid_keys: Sequence[str]) -> list[str]:
    """``key: old -> new`` for the base settings that make the two experiments differ (not the
    neutral or per-run settings, nor the grid keys, which every run replaces)."""
    ignore = frozenset({*NEUTRAL_KEYS, *_PER_RUN_KEYS, *grid_keys})
    return old.differences(new, ignore=ignore)


# ---------------------------------------------------------------------------------- validation
def validate_names(exp: Experiment) -> None:
    """Unknown models or methods fail before any run starts, naming the option."""
    from autoloss.policies.registry import method_names, parse_method

    known = set(method_names())
    for m in exp.methods:
        name, _ = parse_method(m, exp.base.loss)
        if name not in known and name != "weights":
            raise ConfigError(
                f"--methods: unknown loss method '{m}'; known: {', '.join(sorted(known))}"
            )
    from autoloss.models import model_names

    known_models = set(model_names())
    for m in exp.models:
        if m not in known_models:
            raise ConfigError(
                f"--models: unknown model '{m}'; known: {', '.join(sorted(known_models))}"
            )


def resolve_data(base: RunConfig) -> tuple[str, str]:
    """Absolute dataset path (the embedded default prepared once, here) and its task."""
    from autoloss.data.store import open_dataset

    ds = open_dataset(base.data.path, task=base.data.task)  # a DataError names a bad directory
    return str(Path(ds.path).resolve()), ds.spec.task


def prepare_experiment(exp: Experiment, *, overwrite: bool = False) -> Experiment:
    """Resolve the data, check names, and create or re-open ``exp.out``.

    Re-opening an experiment with a different base configuration or other conditions (``grid``)
    is an error (its finished runs would not be comparable) unless ``overwrite``, which deletes
    the previous runs and tables.
    """
    exp.base.data.path, exp.task = resolve_data(exp.base)
    validate_names(exp)
    _check_conditions(exp)
    saved_path = exp.out / "experiment.yaml"
    if saved_path.is_file():
        old = Experiment.load(exp.out)
        keys = [*old.grid_keys, *exp.grid_keys]
        diff = _base_differences(old.base, exp.base, keys)
        if grid_signature(old.grid) != grid_signature(exp.grid):
            diff.insert(0, f"grid: {grid_text(old.grid)} -> {grid_text(exp.grid)}")
        if diff and not overwrite:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise ConfigError(
                f"--out {exp.out}: holds an experiment with other settings ({shown}); "
                "use another --out, or --overwrite to delete its runs"
            )
        if diff and overwrite:
            shutil.rmtree(exp.runs_dir, ignore_errors=True)
            for name in ("results.csv", "table.md"):
                (exp.out / name).unlink(missing_ok=True)
    elif exp.out.exists() and not (exp.out / "runs").is_dir() and any(_user_files(exp.out)):
        raise ConfigError(
            f"--out {exp.out}: exists, is not empty and is not an experiment directory"
        )
    exp.save()
    return exp


def _user_files(out: Path) -> Iterator[Path]:
    """Entries of ``out`` but the temporary files of atomic writes (another ``compare`` may be
    writing experiment.yaml there right now)."""
    return (
        p for p in out.iterdir() if not (p.name.startswith(".") and p.name.endswith(TMP_SUFFIX))
    )


# ---------------------------------------------------------------------------------- running
def train_planned(cfg_dict: dict[str, Any], state: str, quiet: bool) -> dict[str, Any]:
    """Train one run (in this process or a worker): resume, restart or start it."""
    from autoloss.train.search import train_any

    cfg = RunConfig.from_dict(cfg_dict)
    name = Path(str(cfg.out)).name

    def log(line: str) -> None:
        if not quiet:
            logger.info("[%s] %s", name, line)

    if state == "interrupted":
        try:
            return train_any(cfg, resume=True, log=log)[1].to_dict()
        except CheckpointError as exc:
            log(f"cannot resume ({exc}); restarting")
    return train_any(cfg, overwrite=state != "new", log=log)[1].to_dict()


def train_locked(cfg_dict: dict[str, Any], quiet: bool) -> tuple[str, dict[str, Any]]:
    """Lock the run, read its state again and train it (in this process or a worker).

    Returns ``("trained", result)``, ``("done", {})`` when another process finished it since it
    was planned, or ``("busy", holder)`` when another live process holds its lock.
    """
    lock = RunLock(Path(str(cfg_dict["out"])))
    if not lock.acquire():
        return "busy", lock.holder or {}
    with lock:
        if lock.took_over and not quiet:
            logger.info("[%s] took over a stale lock (%s)", lock.path.stem, lock.took_over)
        state = run_state(Path(str(cfg_dict["out"])))
        if state == "done":
            return "done", {}
        return "trained", train_planned(cfg_dict, state, quiet)


@dataclass
class CompareOutcome:
    rows: list[ResultRow]
    summary: Summary
    table: str
    trained: list[str]
    skipped: list[str]
    failed: dict[str, str]
    #: Runs another live process was training (its lock): left to it, not failed.
    elsewhere: dict[str, str] = field(default_factory=dict)


class _Tally:
    """Which runs finished or failed, logged as they come in."""

    def __init__(self, total: int, log: Log) -> None:
        self.total, self.log = total, log
        self.trained: list[str] = []
        self.failed: dict[str, str] = {}
        self.finished_elsewhere: list[str] = []
        self.elsewhere: dict[str, str] = {}
        self.t0 = time.perf_counter()

    @property
    def count(self) -> int:
        return (
            len(self.trained)
            + len(self.failed)
            + len(self.finished_elsewhere)
            + len(self.elsewhere)
        )

    def outcome(self, run: PlannedRun, status: str, payload: dict[str, Any]) -> None:
        """The answer of :func:`train_locked` for ``run``."""
        if status == "trained":
            self.done(run, payload)
        elif status == "done":
            self.finished_elsewhere.append(run.name)
            self.log(f"[{self.count}/{self.total}] {run.name}: finished by another process")
        else:
            self.elsewhere[run.name] = describe_holder(payload)
            self.log(
                f"[{self.count}/{self.total}] {run.name}: being trained by"
                f" {self.elsewhere[run.name]}; left to it"
            )

    def done(self, run: PlannedRun, content: dict[str, Any]) -> None:
        """``run`` was trained: ``content`` is its result (result.json's content, as the run
        returned it across processes)."""
        self.trained.append(run.name)
        result = RunResult.from_dict(content)
        auc = result.metric("test" if result.test else "valid", "auc")
        self.log(
            f"[{self.count}/{self.total}] {run.name}: test AUC {auc:.4f}, "
            f"{result.train_seconds or 0:.1f}s training "
            f"({time.perf_counter() - self.t0:.0f}s elapsed)"
        )

    def fail(self, run: PlannedRun, exc: BaseException) -> None:
        if isinstance(exc, AutolossError):
            raise exc  # a bad option or input: every other run would fail the same way
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.failed[run.name] = f"{type(exc).__name__}: {exc}"
        self.log(f"run {run.name} failed:\n{tb}")


def _train(
    exp: Experiment, todo: list[PlannedRun], tally: _Tally, quiet: bool, executor: Executor
) -> None:
    """Train ``todo`` with ``executor``: each run is one call of :func:`train_locked`, wherever
    the executor runs it."""
    calls, runs = [], {}
    for run in todo:
        cfg = run.config(exp.base)
        if executor.concurrent and cfg.train.progress == "auto":
            cfg.train.progress = "off"  # bars of parallel runs would interleave
        calls.append(RunCall(run.name, cfg.to_dict(), quiet))
        runs[run.name] = run
    with closing(executor.execute(train_locked, calls, tally.log)) as answers:
        for call, answer in answers:
            if isinstance(answer, BaseException):
                tally.fail(runs[call.name], answer)
            else:
                tally.outcome(runs[call.name], *answer)


#: ``--shard I/N``: the I-th of N shards of a grid (1 <= I <= N).
Shard = tuple[int, int]


def parse_shard(text: str) -> Shard:
    """``--shard I/N`` as ``(I, N)``: shards are numbered from 1 to N (one line otherwise)."""
    index, sep, count = str(text).strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise ConfigError(
            f"--shard {text}: expected I/N with 1 <= I <= N, e.g. --shard 1/4 ... --shard 4/4"
            " (shards are numbered from 1: with a 0-based job array give"
            " --shard $((SLURM_ARRAY_TASK_ID + 1))/N)"
        )
    return i, n


def shard_runs(plan: Sequence[PlannedRun], shard: Shard | None) -> list[PlannedRun]:
    """The runs of shard ``(I, N)``: those at positions ``I-1, I-1+N, I-1+2N, ...`` of the plan.

    The plan's order is fixed by the grid (:meth:`Experiment.plan`) and does not depend on which
    runs have finished, so the N shards are disjoint, cover the grid, and are the same in every
    process given the same grid; round robin spreads methods, models and seeds over the shards.
    """
    if shard is None:
        return list(plan)
    i, n = shard
    return [run for k, run in enumerate(plan) if k % n == i - 1]


def run_experiment(
    exp: Experiment,
    *,
    jobs: int = 1,
    log: Log | None = None,
    quiet_runs: bool = False,
    executor: Executor | None = None,
    shard: Shard | None = None,
) -> CompareOutcome:
    """Train every unfinished run of ``exp`` (already prepared), then write results and tables.

    A run failing on a bug is logged with its traceback and the others go on (the outcome lists
    it); a user error (:class:`AutolossError`) or an interrupt stops the experiment. Either way
    ``results.csv`` and ``table.md`` describe the runs that finished.

    ``executor`` says where the runs train (:mod:`autoloss.experiments.executors`; default: this
    process, or ``jobs`` worker processes); ``shard`` ``(I, N)`` trains only the I-th of N
    disjoint parts of the grid (:func:`shard_runs`).

    Each run is locked where it is trained (:func:`train_locked`: here, in a worker process, or
    in a Ray task): a run another live process is training is left to it (``elsewhere``), and
    the tables are rebuilt from every finished run on disk, other processes' and shards'
    included: the last to finish writes complete tables.
    """
    if log is None:
        log = logger.info
    if executor is None:
        executor = local_executor(jobs)
    plan = exp.plan()
    mine = shard_runs(plan, shard)
    states = {r.name: r.state() for r in mine}
    todo = [r for r in mine if states[r.name] != "done"]
    skipped = [r.name for r in mine if states[r.name] == "done"]
    executor = executor.for_count(len(todo))
    conds = f" × {len(exp.conditions())} conditions" if exp.grid else ""
    part = f"; shard {shard[0]}/{shard[1]}: {len(mine)} runs" if shard else ""
    log(
        f"experiment {exp.out}: {len(plan)} runs ({len(exp.models)} models × {len(exp.methods)}"
        f" methods × {len(exp.seeds)} seeds{conds}){part}, {len(skipped)} finished,"
        f" {len(todo)} to train" + (executor.describe() if todo else "")
    )
    make_dirs(exp.runs_dir, "the runs directory")
    tally = _Tally(len(todo), log)
    try:
        _train(exp, todo, tally, quiet_runs, executor)
    finally:
        outcome = finish_experiment(
            exp,
            trained=tally.trained,
            skipped=[*skipped, *tally.finished_elsewhere],
            failed=tally.failed,
            elsewhere=tally.elsewhere,
        )
    if outcome.elsewhere:
        log(
            f"{len(outcome.elsewhere)} runs left to other processes that are training them"
            f" ({', '.join(outcome.elsewhere)}); the last process to finish writes complete tables"
        )
    missing = len(plan) - len(outcome.rows)
    if shard and missing:
        log(
            f"{missing} of {len(plan)} runs of the grid have not finished (other shards): the last"
            " shard to finish writes complete tables (or rerun compare without --shard)"
        )
    return outcome


def collect_rows(exp: Experiment) -> list[ResultRow]:
    """A row for every finished run of the grid, in plan order (with a grid: its condition's
    label in ``condition`` and each grid key's value in a column of that name)."""
    rows = []
    for run in exp.plan():
        p = RunDir(run.run_dir).result
        if not p.is_file():
            continue
        try:
            result = RunResult.from_dict(
                json.loads(read_verified_text(p, "result.json", RESULT_HINT))
            )
        except (ValueError, TypeError, AttributeError):  # not JSON, or JSON but not a result
            continue
        row = result_row(
            result, model=run.model, method=run.method, seed=run.seed, run_dir=run.run_dir
        )
        if exp.grid:
            row["condition"] = exp.label(run.condition)
            row.update(dict(run.condition))
        rows.append(row)
    return rows


def condition_summaries(exp: Experiment, rows: Sequence[ResultRow]) -> list[ConditionSummary]:
    """The summary (:func:`summarize`) of each condition's rows, in grid order."""
    out = []
    for cond in exp.conditions():
        label = exp.label(cond)
        sel = [r for r in rows if str(r.get("condition") or "") == label]
        summary = summarize(sel, models=exp.models, methods=exp.methods)
        summary.task = summary.task or exp.task
        out.append(ConditionSummary(condition_values(cond, exp.grid_keys), summary))
    return out


def finish_experiment(
    exp: Experiment,
    *,
    trained: Sequence[str] = (),
    skipped: Sequence[str] = (),
    failed: dict[str, str] | None = None,
    elsewhere: dict[str, str] | None = None,
) -> CompareOutcome:
    """Write results.csv and table.md from the finished runs on disk.

    Under the experiment's guard, so that of two processes finishing together the later one
    reads every run the earlier one finished (it writes its tables last).
    """
    with guard(exp.runs_dir):
        rows = collect_rows(exp)
        grid_columns = ["condition", *exp.grid_keys] if exp.grid else []
        write_results_csv(exp.out / "results.csv", rows, extra_columns=grid_columns)
        summary = summarize(rows, models=exp.models, methods=exp.methods)
        if not summary.task:
            summary.task = exp.task
        notes = exp.notes()
        missing = len(exp.plan()) - len(rows)
        if missing:
            notes.append(f"**incomplete**: {missing} of {len(exp.plan())} runs have not finished")
        baseline = baseline_method(exp.methods)
        if exp.grid:
            table = render_grid_markdown(
                condition_summaries(exp, rows),
                title=exp.title(),
                notes=notes,
                baseline=baseline,
            )
        else:
            table = render_markdown(summary, title=exp.title(), notes=notes, baseline=baseline)
        write_text(exp.out / "table.md", table, what="the table")
    return CompareOutcome(
        rows,
        summary,
        table,
        list(trained),
        list(skipped),
        dict(failed or {}),
        dict(elsewhere or {}),
    )
