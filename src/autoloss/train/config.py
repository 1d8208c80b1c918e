"""One typed configuration object for a training run.

A run is fully described by a :class:`RunConfig`: YAML files and command-line options are only two
ways to fill it. ``config.yaml`` in a run directory is ``RunConfig.to_dict()``, so
``autoloss train --config RUN/config.yaml`` repeats the run. Any field can be overridden with a
dotted key (``--set model.embed_dim=32``); the common ones also have their own flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import ConfigError
from autoloss.policies.config import LossConfig


@dataclass
class DataConfig:
    path: str | None = None  # an encoded dataset dir; None = the embedded MovieLens default
    task: str = "binary"  # task of the embedded default when path is None
    eval_batch_size: int = 20000
    block_rows: int | None = None  # contiguous-block shuffling for data larger than RAM


@dataclass
class ModelConfig:
    name: str = "deepfm"
    embed_dim: int = 16
    mlp: list[int] = field(default_factory=lambda: [128, 128])
    dropout: float = 0.2
    batch_norm: bool = True
    embedding_l2: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific hyper-parameters


@dataclass
class OptimConfig:
    lr: float = 1e-3
    embedding_lr: float | None = None  # None = same as lr
    weight_decay: float = 0.0  # L2 on dense parameters (embeddings: model.embedding_l2)
    batch_size: int = 2000


@dataclass
class TrainConfig:
    epochs: int = 10
    patience: int = 2  # early stopping on validation AUC
    eval_every_steps: int = 0  # 0 = once per epoch
    log_every: int = 50  # policy statistics every N steps
    seed: int = 2021
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # 0 = torch default
    max_steps: int = 0  # 0 = no limit (useful for smoke tests and budgets)
    progress: str = "auto"  # auto | on | off


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
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"not valid YAML: {str(exc).splitlines()[0]}", path=p) from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError("a config file must be a mapping of sections", path=p)
        return cls.from_dict(raw or {}, source=str(p))

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")

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
        if len(parts) != 2 or not hasattr(self, parts[0]):
            raise ConfigError(f"unknown setting '{key}' (from {source})")
        section = getattr(self, parts[0])
        names = {f.name: f for f in dataclasses.fields(section)}
        if parts[1] not in names:
            if parts[0] == "model":  # model-specific hyper-parameter
                self.model.extra[parts[1]] = _parse_scalar(value)
                return
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown setting '{key}' (from {source}); {parts[0]} has: {known}")
        setattr(section, parts[1], _coerce(value, names[parts[1]].type, key))

    def get(self, key: str) -> Any:
        obj: Any = self
        for part in key.split("."):
            obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
        return obj


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
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
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
    except (TypeError, ValueError):
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
