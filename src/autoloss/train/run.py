"""Run directories: create, train into, and load back.

A run directory holds ``config.yaml`` (repeat with ``autoloss train --config``), ``metrics.jsonl``,
``result.json``, ``model.pt`` (state dict), ``controller.pt`` (learnt loss policies) and
``dataset/`` (the dataset's meta.json and vocabularies, so ``predict`` encodes raw rows the same way).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.data.store import EncodedDataset
from autoloss.errors import CheckpointError, ConfigError
from autoloss.train.config import RunConfig
from autoloss.train.trainer import Trainer, build_recommender, load_checkpoint_file, resolve_device


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return (
        Path("runs")
        / f"{cfg.model.name}-{cfg.loss.method.replace(':', '_')}-s{cfg.train.seed}-{stamp}"
    )


def train_run(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, log: Any = None
) -> tuple[Path, dict[str, Any]]:
    """Train ``cfg`` into its run directory and return (run_dir, result)."""
    run_dir = Path(cfg.out) if cfg.out else default_run_dir(cfg)
    ckpt = run_dir / "checkpoint.pt"
    if run_dir.exists() and not resume:
        if any(run_dir.iterdir()) and not overwrite:
            hint = " (an unfinished run: add --resume)" if ckpt.exists() else ""
            raise ConfigError(
                f"--out {run_dir}: directory exists and is not empty{hint}; use --overwrite to replace it"
            )
    if resume and not ckpt.exists():
        if (run_dir / "result.json").exists():
            return run_dir, json.loads((run_dir / "result.json").read_text())
        raise CheckpointError("--resume: no checkpoint.pt to resume from", path=run_dir)
    # Build everything (data, model, policy) before touching the disk: a bad option leaves nothing.
    trainer = Trainer(cfg, run_dir=None, log=log)
    created = not run_dir.exists()
    if overwrite and run_dir.exists() and not resume:
        shutil.rmtree(run_dir)
        created = True
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer.run_dir = run_dir
        if resume:
            trainer.load_checkpoint(ckpt)
        else:
            saved = cfg.copy()
            saved.data.path = str(Path(trainer.dataset.path).resolve())
            saved.out = str(run_dir)
            saved.save_yaml(run_dir / "config.yaml")
            copy_dataset_reference(trainer.dataset, run_dir / "dataset")
        result = trainer.fit()
    except BaseException:
        # A failed fresh run leaves nothing behind; an interrupted one keeps its checkpoint.
        if created and not (run_dir / "checkpoint.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir, result


def copy_dataset_reference(dataset: EncodedDataset, dest: Path) -> None:
    """meta.json and the vocabularies: what predict needs to encode raw rows like the training data."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(dataset.path)
    shutil.copy2(src / "meta.json", dest / "meta.json")
    for sub in ("vocab", "side"):  # side: e.g. MovieLens movies table for genres/year
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dest / sub, dirs_exist_ok=True)


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: RunConfig
    spec: FeatureSpec
    meta: dict[str, Any]
    model: nn.Module
    result: dict[str, Any] | None


def load_run(run_dir: str | Path, device: str = "cpu") -> LoadedRun:
    """Rebuild a trained model from its run directory (weights loaded with weights_only=True)."""
    rd = Path(run_dir)
    if not (rd / "config.yaml").is_file():
        raise CheckpointError("not a run directory (no config.yaml)", path=rd)
    cfg = RunConfig.from_yaml(rd / "config.yaml")
    meta_path = rd / "dataset" / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError("run directory has no dataset/meta.json", path=rd)
    meta = json.loads(meta_path.read_text())
    spec = FeatureSpec.from_meta(meta)
    model = build_recommender(cfg, spec)
    state = load_checkpoint_file(rd / "model.pt")
    try:
        model.load_state_dict(state["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"weights do not match the model: {str(exc).splitlines()[0]}", path=rd / "model.pt"
        ) from None
    model.to(resolve_device(device)).eval()
    result = (
        json.loads((rd / "result.json").read_text()) if (rd / "result.json").is_file() else None
    )
    return LoadedRun(rd, cfg, spec, meta, model, result)
