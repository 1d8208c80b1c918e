"""The checkpoint format (``checkpoint.pt``): everything a resume needs to continue a run exactly.

A checkpoint holds the model, the policy and the optimisers, the run's position (step, epoch,
inside an epoch or not, the running epoch loss, the validation stream), early stopping's state,
every random generator (torch, CUDA, NumPy, Python), and what identifies the run: its settings
(config.yaml as YAML) and its dataset (the identity of meta.json). A resume refuses another
format, another world size, edited settings or another dataset, naming what differs.
In a distributed run the entries of :data:`PER_RANK` are saved for each rank.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from autoloss.data.store import EncodedDataset
from autoloss.errors import CheckpointError
from autoloss.train import nonfinite
from autoloss.train.config import RESUMABLE_CHANGES, RunConfig, TrainConfig, shown_differences
from autoloss.train.rundir import RunDir

if TYPE_CHECKING:
    from autoloss.train.sync import StepSync
    from autoloss.train.trainer import Trainer

CHECKPOINT_FORMAT = "autoloss-checkpoint-3"
#: Checkpoint entries that differ between the ranks of a distributed run (saved for each).
PER_RANK = ("rng", "epoch_loss")
#: The trainer's position (``state["position"]``), in the order it is saved, and each one's type.
POSITION: dict[str, type] = {
    "step": int,
    "epoch": int,
    "in_epoch": bool,
    "epoch_batches": int,
    "finished": bool,
    "rows_seen": int,
    "train_seconds": float,
    "nonfinite_skipped": int,
}


# ---------------------------------------------------------------------------------- when
class CheckpointClock:
    """When a checkpoint is due inside an epoch: every ``train.checkpoint_every`` steps, and
    ``train.checkpoint_minutes`` after the last one (the main process's clock decides: the
    checkpoints of a distributed run are collective)."""

    def __init__(self, cfg: TrainConfig, sync: StepSync) -> None:
        self.every, self.minutes, self.sync = cfg.checkpoint_every, cfg.checkpoint_minutes, sync
        self.last = time.monotonic()

    def restart(self) -> None:
        """A checkpoint was just written."""
        self.last = time.monotonic()

    def due(self, step: int) -> bool:
        if self.every > 0 and step % self.every == 0:
            return True
        if self.minutes <= 0:
            return False
        return self.sync.main_decides(time.monotonic() - self.last >= 60 * self.minutes)


# ---------------------------------------------------------------------------------- writing
def save(trainer: Trainer, run_dir: RunDir) -> None:
    """Write ``trainer``'s checkpoint into ``run_dir`` (sharded tables: into their own files
    first); never a diverged state."""
    nonfinite.check_parameters(trainer.model, trainer.step, run_dir)
    state = collect(trainer)
    trainer.sync.save_tables(state, run_dir, trainer.step)
    run_dir.save_checkpoint(state)
    trainer.sync.checkpoint_written(state, run_dir)


def collect(trainer: Trainer) -> dict[str, Any]:
    """Everything a resume of ``trainer`` needs to continue exactly where the run is now."""
    position: dict[str, Any] = {k: getattr(trainer, k) for k in POSITION}
    position["warnings"] = list(trainer.warnings)
    valid = trainer._valid
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": trainer.model.state_dict(),
        "policy": trainer.policy.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "position": position,
        "epoch_loss": trainer._epoch_loss.state(),
        "valid_stream": None if valid is None else valid.state(),
        **trainer.stopping.state(),
        "rng": rng_state(trainer.device),
        # what the run computes: a resume refuses an edited config.yaml or another dataset
        "settings": yaml.safe_dump(trainer.cfg.to_dict(), sort_keys=True),
        "data_identity": trainer.dataset.identity,
    }
    trainer.sync.add_rank_states(state, PER_RANK)  # each rank's random stream and running loss
    return state


def rng_state(device: torch.device) -> dict[str, Any]:
    np_state: Any = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": (str(np_state[0]), torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "python": random.getstate(),
    }


# ---------------------------------------------------------------------------------- reading
def restore(trainer: Trainer, run_dir: RunDir) -> None:
    """Continue ``trainer`` from ``run_dir``'s checkpoint, after checking that it is this run's."""
    state = run_dir.load_checkpoint()
    check_format(state, run_dir)
    check_world_size(state, trainer.sync.world_size, run_dir)
    check_identity(state, trainer.cfg, trainer.dataset, run_dir)
    state = trainer.sync.load_tables(trainer.sync.own_state(state), run_dir)
    try:
        trainer.model.load_state_dict(state["model"])
        trainer.policy.load_state_dict(state["policy"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        _load_position(trainer, state)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint does not match this run: {str(exc).splitlines()[0]}",
            path=run_dir.checkpoint,
        ) from None


def _load_position(trainer: Trainer, state: dict[str, Any]) -> None:
    pos = state["position"]
    for name, kind in POSITION.items():
        setattr(trainer, name, kind(pos[name]))
    trainer.warnings = [str(w) for w in pos["warnings"]]
    trainer._epoch_loss.load(state["epoch_loss"])
    if state["valid_stream"] is not None:
        trainer._valid_stream().load(state["valid_stream"])
    trainer.stopping.load(state)
    set_rng_state(state["rng"], trainer.device)


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy(), *rest))
    random.setstate(_tuples(state["python"]))


def _tuples(obj: Any) -> Any:
    """``random.setstate`` wants tuples where a saved state may hold lists."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, list | tuple) else obj


# ---------------------------------------------------------------------------------- checks
def check_format(state: dict[str, Any], run_dir: RunDir) -> None:
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT!r} "
            "(written by another version of autoloss): rerun with --overwrite",
            path=run_dir.checkpoint,
        )


def check_identity(
    state: dict[str, Any], cfg: RunConfig, dataset: EncodedDataset, run_dir: RunDir
) -> None:
    """A checkpoint resumes the settings and the data it was written with: config.yaml
    edited since, or the dataset prepared again, is refused, naming what changed.
    (Checkpoints written before they recorded both are not checked.)"""
    if "settings" in state:
        saved = RunConfig.from_dict(yaml.safe_load(state["settings"]))
        diff = saved.differences(cfg, ignore=RESUMABLE_CHANGES | {"data.path"})
        if diff:
            raise CheckpointError(
                f"{run_dir.config.name} was changed after the checkpoint was written "
                f"({shown_differences(diff)}): restore those settings to resume, or start again with --overwrite",
                path=run_dir.path,
            )
    if "data_identity" in state and state["data_identity"] != dataset.identity:
        raise CheckpointError(
            f"the dataset {dataset.path} is not the one this run started on (prepared "
            "again since the checkpoint: its meta.json differs): resume on the original "
            "dataset, or start again with --overwrite",
            path=run_dir.path,
        )


def check_world_size(state: dict[str, Any], now: int, run_dir: RunDir) -> None:
    """A checkpoint resumes at the world size that wrote it (its shards and streams)."""
    saved = int(state.get("world_size", 1))
    if saved != now:
        raise CheckpointError(
            f"the checkpoint was written by a run of {saved} process(es), this run has {now}: "
            f"resume it with {saved} (autoloss train --nproc {saved} --resume, or torchrun "
            f"--nproc_per_node/--nnodes giving {saved} in all)",
            path=run_dir.checkpoint,
        )
