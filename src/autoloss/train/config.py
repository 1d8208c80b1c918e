"""One typed configuration object for a training run.

A run is fully described by a :class:`RunConfig`: YAML files and command-line options are only two
ways to fill it. ``config.yaml`` in a run directory is ``RunConfig.to_dict()``, so
``autoloss train --config RUN/config.yaml`` repeats the run. Any field can be overridden with a
dotted key (``--set model.embed_dim=32``); the common ones also have their own flags.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoloss import yamlfile
from autoloss.errors import ConfigError
from autoloss.files import write_text
from autoloss.policies.config import LossConfig


@dataclass
class DataConfig:
    path: str | None = None  # an encoded dataset dir; None = the embedded MovieLens default
    task: str = "binary"  # task of the embedded default when path is None
    eval_batch_size: int = 20000
    block_rows: int | None = None  # contiguous-block shuffling for data larger than RAM
    # Data conditions, applied in memory to the prepared data (docs/data.md, "Data conditions")
    label_noise: float = 0.0  # probability of flipping a train (and valid) label; 0 = off
    noise_mode: str = "symmetric"  # symmetric | pos2neg | neg2pos (the last two: binary only)
    noise_on_valid: bool = True  # also flip valid labels (test labels never are)
    noise_seed: int | None = None  # None: noise from train.seed, positive subsample from 0
    pos_rate: float | None = None  # subsample positives of every split to this rate; None = off
    # share of the valid split that learnt policies update on (the "meta" split); the rest selects
    # (early stopping, best epoch) for every method; 0 = off: policies update on the valid split
    meta_fraction: float = 0.0
    meta_use: str = "policy"  # policy | train: the meta rows join the train split ([ce+meta])


@dataclass
class ModelConfig:
    name: str = "deepfm"
    embed_dim: int = 16
    mlp: list[int] = field(default_factory=lambda: [128, 128])
    dropout: float = 0.2
    batch_norm: bool = True
    embedding_l2: float = 0.0
    dense_init: str = "torch"  # torch (PyTorch's default) | xavier (normal, zero bias: FuxiCTR's)
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific hyper-parameters


@dataclass
class OptimConfig:
    lr: float = 1e-3
    embedding_lr: float | None = None  # None = same as lr
    weight_decay: float = 0.0  # L2 on dense parameters (embeddings: model.embedding_l2)
    batch_size: int = 2000
    lazy_embeddings: bool = True  # row-wise Adam on the rows a batch touched; false: dense Adam
    # docs/models.md, "Training defaults": clipping measured better than none on Frappe_x1 and
    # Criteo; the decay helped DeepFM but stopped AutoInt early (-0.02 AUC): off by default
    clip_norm: float = 10.0  # clip the global gradient norm to this (0 = off)
    lr_decay_on_plateau: float = 1.0  # multiply the lr by this after each non-improving evaluation
    # the embedding tables' optimiser: adam (lazy, row-wise) | rowwise_adagrad (FBGEMM's, the one
    # sharded tables can use on the CPU: docs/distributed.md, "Sharded embedding tables")
    table_optimizer: str = "adam"


@dataclass
class TrainConfig:
    epochs: int = 10
    patience: int = 2  # early stopping on the validation metric select_by
    select_by: str = "auc"  # auc | logloss: the validation metric of early stopping and best epoch
    eval_every_steps: int = 0  # 0 = once per epoch
    log_every: int = 50  # policy statistics every N steps
    seed: int = 2021
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # 0 = auto (trainer.run_threads); config.yaml records the count used
    heap: str = "keep"  # keep: freed C heap memory kept for the next step (train/heap.py) | system
    max_steps: int = 0  # 0 = no limit (useful for smoke tests and budgets)
    progress: str = "auto"  # auto | on | off
    checkpoint_every: int = 0  # also checkpoint every N steps (0 = only by time and per epoch)
    checkpoint_minutes: float = 10.0  # also checkpoint every M minutes of training (0 = never)
    on_nonfinite: str = "stop"  # a NaN/inf training loss: stop (keep the last checkpoint) | skip
    # experiment tracking of metrics.jsonl's records and the config (train/tracking.py):
    # tensorboard, mlflow (the 'tracking' extra); empty: metrics.jsonl only
    tracking: list[str] = field(default_factory=list)
    # replicated: every process holds every table | sharded: TorchRec places each table on one
    # process (the 'torchrec' extra; docs/distributed.md, "Sharded embedding tables")
    embeddings: str = "replicated"


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str | None = None

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str = "config") -> RunConfig:
        cfg = cls()
        for key, value in _flatten(raw or {}).items():
            cfg.set(key, value, source=source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config file not found", path=p)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not valid YAML: {str(exc).splitlines()[0]}", path=p) from None
        raw = yamlfile.load(text, path=p, what="config file")
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError("a config file must be a mapping of sections", path=p)
        return cls.from_dict(raw or {}, source=str(p))

    def save_yaml(self, path: str | Path) -> None:
        write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def copy(self) -> RunConfig:
        return RunConfig.from_dict(self.to_dict())

    # ------------------------------------------------------------------ dotted access
    def set(self, key: str, value: Any, *, source: str = "option") -> None:
        """Set ``section.name`` (or ``model.extra.name``) with type checking and coercion."""
        parts = key.split(".")
        if parts[0] == "out" and len(parts) == 1:
            self.out = None if value is None else str(value)
            return
        if len(parts) >= 3 and parts[0] == "model" and parts[1] == "extra":
            self.model.extra[".".join(parts[2:])] = _parse_scalar(value)
            return
        section = getattr(self, parts[0], None) if len(parts) == 2 else None
        if not dataclasses.is_dataclass(section):
            raise ConfigError(f"unknown setting {key!r} (from {source})")
        names = {f.name: f for f in dataclasses.fields(section)}
        if parts[1] not in names:
            if parts[0] == "model":  # model-specific hyper-parameter
                self.model.extra[parts[1]] = _parse_scalar(value)
                return
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown setting {key!r} (from {source}); {parts[0]} has: {known}")
        coerced = _coerce(value, names[parts[1]].type, key)
        check_value(key, coerced, source)
        setattr(section, parts[1], coerced)

    def validate(self) -> None:
        """Check every setting with a rule (``RULES``); the first bad one is a ConfigError."""
        for key in RULES:
            check_value(key, self.get(key))

    def differences(self, other: RunConfig, *, ignore: frozenset[str] = frozenset()) -> list[str]:
        """``key: mine -> other's`` for every setting that differs (dotted keys)."""
        a, b = _flatten(self.to_dict()), _flatten(other.to_dict())
        return [
            f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in sorted(set(a) | set(b))
            if k not in ignore and a.get(k) != b.get(k)
        ]

    def get(self, key: str) -> Any:
        obj: Any = self
        for part in key.split("."):
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        return obj


#: The most CPU threads a run may ask for (more is a typo, and crashes OpenMP on some machines).
MAX_THREADS = 1024
#: Seeds: what every random generator a run seeds accepts (NumPy's legacy seeds are 32-bit).
MAX_SEED = 2**32 - 1
#: Every other integer setting: a 32-bit signed value (more is a typo, e.g. ``epochs=1e308``).
MAX_INT = 2**31 - 1


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


#: The experiment trackers ``train.tracking`` may name (:mod:`autoloss.train.tracking`).
TRACKERS = ("tensorboard", "mlflow")

#: Checked when a value is set and again when a run starts: key -> (test, what it must be).
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.task": (lambda v: v in ("binary", "multiclass"), "binary or multiclass"),
    "data.eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "data.block_rows": (lambda v: v is None or v >= 1, ">= 1"),
    "data.label_noise": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1) (0: off)"),
    "data.noise_mode": (
        lambda v: v in ("symmetric", "pos2neg", "neg2pos"),
        "symmetric, pos2neg or neg2pos",
    ),
    "data.meta_fraction": (lambda v: _finite(v) and 0 <= v < 1, "in [0, 1)"),
    "data.meta_use": (lambda v: v in ("policy", "train"), "policy or train"),
    "data.pos_rate": (lambda v: v is None or (_finite(v) and 0 < v < 1), "in (0, 1) or empty"),
    "model.embed_dim": (lambda v: v >= 1, ">= 1"),
    "model.mlp": (lambda v: all(h >= 1 for h in v), "a list of sizes >= 1"),
    "model.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.embedding_l2": (lambda v: _finite(v) and v >= 0, "finite and >= 0"),
    "optim.lr": (lambda v: _finite(v) and v > 0, "finite and > 0"),
    "optim.embedding_lr": (lambda v: v is None or (_finite(v) and v > 0), "finite and > 0"),
    "optim.weight_decay": (lambda v: _finite(v) and v >= 0, "finite and >= 0"),
    "optim.batch_size": (lambda v: v >= 1, ">= 1"),
    "optim.clip_norm": (lambda v: _finite(v) and v >= 0, "finite and >= 0 (0: off)"),
    "optim.lr_decay_on_plateau": (lambda v: _finite(v) and 0 < v <= 1, "in (0, 1] (1: off)"),
    "model.dense_init": (lambda v: v in ("torch", "xavier"), "torch or xavier"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.seed": (lambda v: 0 <= v <= MAX_SEED, f"in 0..{MAX_SEED}"),
    "data.noise_seed": (lambda v: v is None or 0 <= v <= MAX_SEED, f"in 0..{MAX_SEED} or empty"),
    "train.patience": (lambda v: v >= 1, ">= 1"),
    "train.eval_every_steps": (lambda v: v >= 0, ">= 0 (0: once per epoch)"),
    "train.log_every": (lambda v: v >= 1, ">= 1"),
    "train.select_by": (lambda v: v in ("auc", "logloss"), "auc or logloss"),
    "loss.reweight_mode": (lambda v: v in ("unrolled", "first-order"), "unrolled or first-order"),
    "loss.reweight_update_every": (lambda v: v >= 1, ">= 1"),
    "loss.reweight_lr": (lambda v: _finite(v) and v > 0, "finite and > 0"),
    "loss.reweight_hidden": (lambda v: all(h >= 1 for h in v), "a list of sizes >= 1"),
    "train.num_threads": (lambda v: 0 <= v <= MAX_THREADS, f"in 0..{MAX_THREADS} (0: auto)"),
    "train.heap": (lambda v: v in ("keep", "system"), "keep or system"),
    "train.max_steps": (lambda v: v >= 0, ">= 0 (0: no limit)"),
    "train.progress": (lambda v: v in ("auto", "on", "off"), "auto, on or off"),
    "train.checkpoint_every": (lambda v: v >= 0, ">= 0 (0: off)"),
    "train.checkpoint_minutes": (lambda v: _finite(v) and v >= 0, "finite and >= 0 (0: off)"),
    "train.on_nonfinite": (lambda v: v in ("stop", "skip"), "stop or skip"),
    "train.embeddings": (lambda v: v in ("replicated", "sharded"), "replicated or sharded"),
    "optim.table_optimizer": (
        lambda v: v in ("adam", "rowwise_adagrad"),
        "adam or rowwise_adagrad",
    ),
    "train.tracking": (
        lambda v: all(name in TRACKERS for name in v),
        "a list of: " + ", ".join(TRACKERS) + " (empty: none)",
    ),
}

#: Settings that do not change what a run computes (where it writes, how fast, what it shows;
#: ``train.tracking``: where else its records go, so a resumed run may add or drop a tracker).
#: The thread count is not one: it changes how reductions split, and so the last bits of every
#: step (docs/reliability.md).
NEUTRAL_SETTINGS = frozenset(
    {"out", "train.progress", "train.device", "train.heap", "train.tracking"}
)

#: Settings a resumed run may change: the neutral ones, when to checkpoint, and what to do with a
#: non-finite loss from now on.
RESUMABLE_CHANGES = NEUTRAL_SETTINGS | {
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.on_nonfinite",
}


def shown_differences(diff: list[str], most: int = 3) -> str:
    """The first ``most`` of :meth:`RunConfig.differences`, and how many more there are."""
    more = f"; and {len(diff) - most} more" if len(diff) > most else ""
    return "; ".join(diff[:most]) + more


def check_value(key: str, value: Any, source: str | None = None) -> None:
    origin = f" (from {source})" if source else ""
    rule = RULES.get(key)
    if rule is not None and not rule[0](value):
        raise ConfigError(f"setting '{key}'{origin} must be {rule[1]}, got {_short(value)}")
    limit = MAX_SEED if key.endswith("seed") else MAX_INT
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > limit:
            raise ConfigError(f"setting '{key}'{origin} must be at most {limit}, got {_short(v)}")


def _short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters (a 309-digit number is not worth echoing)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and (key != "model.extra" or not v):
            if key == "model.extra":
                continue
            out.update(_flatten(v, key + "."))
        elif isinstance(v, dict):
            for ek, ev in v.items():
                out[f"model.extra.{ek}"] = ev
        else:
            out[key] = v
    return out


def _parse_scalar(value: Any) -> Any:
    if isinstance(value, str):
        return yamlfile.load(value, what=f"the value {value[:40]!r}", invalid=value)
    return value


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a YAML/CLI value to the annotated type, or raise ConfigError naming the key."""
    ann = str(annotation)
    value = _parse_scalar(value) if isinstance(value, str) and not ann.startswith("str") else value
    optional = "None" in ann
    if value is None:
        if optional:
            return None
        raise ConfigError(f"setting '{key}' may not be empty")
    try:
        if ann.startswith("list[int]"):
            return _as_list(value, int)
        if ann.startswith("list[float]"):
            return _as_list(value, float)
        if ann.startswith("list[str]"):
            return [str(v) for v in _as_list(value, str)]
        if ann.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return value
        if ann.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if ann.startswith("int"):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if ann.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"setting '{key}' has an invalid value {value!r} (expected {ann})"
        ) from None


def _as_list(value: Any, kind: type) -> list[Any]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError
    return [kind(v) for v in value]
