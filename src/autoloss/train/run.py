"""Run directories: create one, train into it, and load a trained run back.

The layout and file names are :class:`~autoloss.train.rundir.RunDir`'s.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.data.store import check_format_version
from autoloss.errors import CheckpointError, ConfigError
from autoloss.files import check_writable, make_dirs
from autoloss.locks import RunLock, lock_run
from autoloss.train import distributed
from autoloss.train.builder import build_recommender, resolve_device, run_threads
from autoloss.train.config import RESUMABLE_CHANGES, RunConfig, shown_differences
from autoloss.train.result import RunResult
from autoloss.train.rundir import RunDir
from autoloss.train.table_files import load_model_tables
from autoloss.train.tracking import tracked
from autoloss.train.trainer import Trainer


@dataclass
class FixedWeightsOutcome:
    """Weights chosen before training by an outer loop (``--loss search``): the run trains with
    ``weights:w`` and records ``method`` and ``info`` in its result."""

    method: str
    weights: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "weights": self.weights, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FixedWeightsOutcome:
        return cls(str(d["method"]), [float(w) for w in d["weights"]], dict(d.get("info") or {}))


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (
        Path("runs")
        / f"{cfg.model.name}-{cfg.loss.method.replace(':', '_')}-s{cfg.train.seed}-{stamp}"
    )


def run_dir_of(cfg: RunConfig) -> RunDir:
    return RunDir(cfg.out if cfg.out else default_run_dir(cfg))


def saved_config(out: str | Path) -> RunConfig | None:
    """The config.yaml of the run directory ``out``, or None when there is none yet."""
    rd = RunDir(out)
    return RunConfig.from_yaml(rd.config) if rd.config.is_file() else None


def check_run_dir(rd: RunDir, *, resume: bool, overwrite: bool) -> None:
    """Refuse a non-empty directory for a fresh run (unless ``overwrite``), and a resume of a
    directory that holds no run; and one that cannot be written (under a file, read-only)."""
    if not rd.read_only:
        check_writable(rd.path)
    if rd.path.exists() and not resume and not rd.is_empty() and not overwrite:
        hint = ""
        if rd.result.exists():
            hint = " (a finished run)"
        elif rd.config.exists():
            hint = " (an unfinished run: add --resume)"
        raise ConfigError(
            f"--out {rd.path}: directory exists and is not empty{hint}; use --overwrite to replace it"
        )
    if resume and not rd.config.exists():
        raise CheckpointError("--resume: not a run directory (no config.yaml)", path=rd.path)


def check_resumable(rd: RunDir, cfg: RunConfig) -> None:
    """A resumed run must compute what it started computing: refuse changed settings."""
    saved = RunConfig.from_yaml(rd.config)
    given = cfg.copy()
    # 0 (auto) keeps the run's own count; a config.yaml from before runs recorded theirs has 0
    if given.train.num_threads == 0 or saved.train.num_threads == 0:
        given.train.num_threads = saved.train.num_threads
    if given.data.path is not None:
        given.data.path = str(Path(given.data.path).resolve())
    diff = saved.differences(given, ignore=RESUMABLE_CHANGES)
    if diff:
        raise ConfigError(
            f"--resume {rd.path}: these settings differ from the run's config.yaml ({shown_differences(diff)}); "
            "resume with the run's own settings, or start a new run"
        )


def _with_threads(cfg: RunConfig, resumed: RunDir | None, ctx: Any) -> RunConfig:
    """``cfg`` with the thread count it computes with (config.yaml records it): the setting, the
    resumed run's own count for 0 (auto), else :func:`run_threads`'s."""
    cfg = cfg.copy()
    threads = cfg.train.num_threads
    if threads == 0 and resumed is not None:
        threads = RunConfig.from_yaml(resumed.config).train.num_threads
    cfg.train.num_threads = run_threads(threads, ctx)
    return cfg


def train_run(
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    log: Any = None,
    preset: FixedWeightsOutcome | None = None,
) -> tuple[Path, RunResult]:
    """Train ``cfg`` into its run directory and return (run_dir, result).

    ``resume``: continue from the last checkpoint (a finished run returns its result; a run killed
    before its first checkpoint starts again). ``preset``: train with the fixed weights an outer
    loop chose (``cfg`` keeps its method, saved as the run's config.yaml; the outcome is saved as
    search.json).

    In a distributed run every rank calls this; rank 0 alone writes the run directory (its path,
    chosen by rank 0, is the same on every rank).

    The process that writes the run directory holds its lock (:func:`_run_lock`) meanwhile:
    another one is refused in one line naming the holder.
    """
    ctx = distributed.context()
    rd = run_dir_of(cfg)
    if ctx is not None:
        rd = RunDir(distributed.broadcast_object(str(rd.path)), read_only=not ctx.is_main)
    with _run_lock(rd), tracked(rd, cfg) as rd:  # train.tracking: the records go there too
        return _train_locked(
            cfg, rd, ctx, resume=resume, overwrite=overwrite, log=log, preset=preset
        )


@contextmanager
def _run_lock(rd: RunDir) -> Iterator[None]:
    """``RUN_DIR.lock`` held by the process writing ``rd`` (rank 0 of a distributed run; the lock
    of ``compare`` or of the ``--nproc`` launcher is shared, :mod:`autoloss.locks`); every rank
    raises the same one-line :class:`ConfigError` when another live process holds it."""
    lock = None if rd.read_only else lock_run(rd.path)
    refused = distributed.broadcast_object(lock if isinstance(lock, str) else "")
    if refused:
        raise ConfigError(refused)
    try:
        yield
    finally:
        if isinstance(lock, RunLock):
            lock.release()


def _train_locked(
    cfg: RunConfig,
    rd: RunDir,
    ctx: Any,
    *,
    resume: bool,
    overwrite: bool,
    log: Any,
    preset: FixedWeightsOutcome | None,
) -> tuple[Path, RunResult]:
    check_run_dir(rd, resume=resume, overwrite=overwrite)
    cfg = _with_threads(cfg, rd if resume else None, ctx)
    if resume:
        check_resumable(rd, cfg)
        if not rd.checkpoint.exists():
            finished = rd.read_result()
            if finished is not None:
                return rd.path, finished
            overwrite, resume = True, False  # killed before its first checkpoint: start again
    trained = cfg
    if preset is not None:
        trained = cfg.copy()
        trained.loss.method, trained.loss.weights = "weights", list(preset.weights)
    # Build everything (data, model, policy) before touching the disk: a bad option leaves nothing.
    trainer = Trainer(trained, run_dir=None, log=log)
    if preset is not None:
        trainer.method, trainer.policy_info = preset.method, dict(preset.info)
    created = False if rd.read_only else _make_run_dir(rd, overwrite)
    try:
        trainer.run_dir = rd
        rd.remove_temporaries()
        placement = trainer.sync.placement(trainer.model)  # sharded tables: where they live
        if placement is not None:
            rd.save_placement(placement)
        if resume:
            trainer.load_checkpoint(rd)
        else:
            _start_run_dir(rd, cfg, trainer, preset)
        result = trainer.fit()
    except BaseException:
        # A failed fresh run leaves nothing behind; an interrupted one keeps its checkpoint.
        if created and not rd.checkpoint.exists():
            shutil.rmtree(rd.path, ignore_errors=True)
        raise
    return rd.path, result


def _make_run_dir(rd: RunDir, overwrite: bool) -> bool:
    """Create (or, with ``overwrite``, replace) the run directory; True if this call created it."""
    created = not rd.path.exists()
    if overwrite and rd.path.exists():
        shutil.rmtree(rd.path)
        created = True
    make_dirs(rd.path, "the run directory")
    return created


def _start_run_dir(
    rd: RunDir, cfg: RunConfig, trainer: Trainer, preset: FixedWeightsOutcome | None
) -> None:
    saved = cfg.copy()
    saved.data.path = str(Path(trainer.dataset.path).resolve())
    saved.out = str(rd.path)
    rd.save_config(saved.to_dict())
    if preset is not None:
        rd.save_search(preset.to_dict())
    rd.copy_dataset_reference(Path(trainer.dataset.path))


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    spec: FeatureSpec
    meta: dict[str, Any]
    model: nn.Module
    result: RunResult | None


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """Rebuild a trained model from its run directory (weights loaded with weights_only=True)."""
    rd = RunDir(run_dir)
    if not rd.config.is_file():
        raise CheckpointError("not a run directory (no config.yaml)", path=rd.path)
    cfg = RunConfig.from_yaml(rd.config)
    meta = rd.read_json(rd.dataset / "meta.json")
    if meta is None:
        raise CheckpointError("run directory has no dataset/meta.json", path=rd.path)
    check_format_version(meta, rd.dataset / "meta.json", "train the run again with this version")
    spec = FeatureSpec.from_meta(meta)
    cfg.train.embeddings = "replicated"  # model.pt holds the tables gathered, whatever trained
    model = build_recommender(cfg, spec)
    state = rd.load_model_state()
    try:
        weights = dict(state["state_dict"])
        if state.get("tables"):  # a sharded run's tables, read whole here
            weights.update(load_model_tables(rd.path, str(state["tables"])))
        model.load_state_dict(weights)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"weights do not match the model: {str(exc).splitlines()[0]}", path=rd.model
        ) from None
    model.to(resolve_device(device)).eval()
    return LoadedRun(rd.path, cfg, spec, meta, model, rd.read_result())
