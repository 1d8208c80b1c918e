"""Recommender models (they return logits) and their registry.

>>> import torch
>>> from autoloss.data.spec import FeatureSpec
>>> spec = FeatureSpec(cat_names=("user", "item"), cat_vocab=(10, 20))
>>> model = build_model("deepfm", spec, embed_dim=8)
>>> model(torch.tensor([[1, 2], [3, 4]])).shape
torch.Size([2])

Every model takes ``(spec, *, embed_dim=16, mlp=(128, 128), dropout=0.2, batch_norm=True,
embedding_l2=0.0, **model_specific)``; :func:`model_hparams` lists a model's defaults.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.errors import ConfigError, RegistryError
from autoloss.models.autoint import AutoInt
from autoloss.models.base import CTRModel
from autoloss.models.dcn import DCN
from autoloss.models.dcnv2 import DCNv2
from autoloss.models.deepfm import DeepFM
from autoloss.models.fm import FM
from autoloss.models.ipnn import IPNN
from autoloss.models.lr import LR
from autoloss.models.nfm import NFM
from autoloss.models.widedeep import WideDeep
from autoloss.models.xdeepfm import XDeepFM

__all__ = [
    "MODELS",
    "CTRModel",
    "build_model",
    "model_hparams",
    "model_names",
]

MODELS: dict[str, type[CTRModel]] = {
    "lr": LR,
    "fm": FM,
    "deepfm": DeepFM,
    "ipnn": IPNN,
    "nfm": NFM,
    "autoint": AutoInt,
    "widedeep": WideDeep,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "xdeepfm": XDeepFM,
}


def model_names() -> list[str]:
    """Registered model names, in registration order."""
    return list(MODELS)


def _model_class(name: str) -> type[CTRModel]:
    try:
        return MODELS[name]
    except KeyError:
        raise RegistryError(
            f"unknown model {name!r}; known models: {', '.join(model_names())}"
        ) from None


def model_hparams(name: str) -> dict[str, Any]:
    """Hyper-parameters of a model and their defaults: the common ones (the keyword arguments
    of :class:`CTRModel`) followed by the model's own (those of its constructor)."""
    hparams: dict[str, Any] = {}
    for cls in (CTRModel, _model_class(name)):
        for p in inspect.signature(cls.__init__).parameters.values():
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty:
                hparams[p.name] = p.default
    return hparams


def _check_common(name: str, hp: dict[str, Any]) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"model {name}: {key}={hp[key]!r} {why}", column=key)

    if "embed_dim" in hp and (not isinstance(hp["embed_dim"], int) or hp["embed_dim"] < 1):
        raise bad("embed_dim", "must be a positive integer")
    if "dropout" in hp and not 0.0 <= float(hp["dropout"]) < 1.0:
        raise bad("dropout", "must be in [0, 1)")
    if "embedding_l2" in hp and float(hp["embedding_l2"]) < 0:
        raise bad("embedding_l2", "must be >= 0")
    if "mlp" in hp:
        mlp = hp["mlp"]
        if isinstance(mlp, int):
            mlp = (mlp,)
        if not all(isinstance(h, int) and h > 0 for h in mlp):
            raise bad("mlp", "must be a list of positive integers")
        hp["mlp"] = tuple(mlp)


def build_model(name: str, spec: FeatureSpec, **hparams: Any) -> nn.Module:
    """Instantiate model ``name`` for ``spec``.

    Raises:
        RegistryError: unknown model name (the message lists the known ones).
        ConfigError: a hyper-parameter the model does not take, or an invalid value.
    """
    cls = _model_class(name)
    known = model_hparams(name)
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise ConfigError(
            f"model {name} has no hyper-parameter {', '.join(unknown)}; "
            f"it takes: {', '.join(known)}",
            column=unknown[0],
        )
    hp = dict(hparams)
    _check_common(name, hp)
    for key, value in hp.items():
        if isinstance(value, list):  # YAML gives lists; tuple defaults keep modules hashable
            hp[key] = tuple(value)
    try:
        model = cls(spec, **hp)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model {name}: {e}") from e
    model.init_dense()
    return model
