"""The model registry: names, defaults, and clear errors for unknown names and options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.errors import ConfigError, RegistryError
from autoloss.models import MODELS, CTRModel, build_model, model_hparams, model_names
from autoloss.train.optim import split_parameters

SPEC = FeatureSpec(cat_names=("a", "b"), cat_vocab=(5, 6))
REQUIRED = ["lr", "fm", "deepfm", "ipnn", "nfm", "autoint", "widedeep", "dcn", "dcnv2", "xdeepfm"]
COMMON = {
    "embed_dim": 16,
    "mlp": (128, 128),
    "dropout": 0.2,
    "batch_norm": True,
    "embedding_l2": 0.0,
    "dense_init": "torch",
}


def test_every_required_model_is_registered() -> None:
    assert model_names() == REQUIRED
    assert all(issubclass(MODELS[n], CTRModel) for n in REQUIRED)


@pytest.mark.parametrize("name", REQUIRED)
def test_defaults_follow_the_paper(name: str) -> None:
    hp = model_hparams(name)
    assert {k: hp[k] for k in COMMON} == COMMON


def test_model_specific_defaults() -> None:
    assert model_hparams("dcn")["num_cross_layers"] == 3
    assert model_hparams("dcnv2") == {**COMMON, "num_cross_layers": 3, "structure": "parallel"}
    assert model_hparams("xdeepfm") == {**COMMON, "cin_layers": (32, 32), "split_half": True}
    assert model_hparams("autoint") == {
        **COMMON,
        "attention_layers": 3,
        "num_heads": 2,
        "attention_dim": 32,
        "residual": True,
        "scale": False,
        "use_mlp": False,
    }


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as err:
        build_model("deepfmm", SPEC)
    msg = str(err.value)
    assert "deepfmm" in msg and all(n in msg for n in REQUIRED)
    with pytest.raises(RegistryError):
        model_hparams("nope")


def test_unknown_hyperparameter_is_named() -> None:
    with pytest.raises(ConfigError, match="cross_layers") as err:
        build_model("deepfm", SPEC, cross_layers=2)
    assert not isinstance(err.value, RegistryError)
    assert "embed_dim" in str(err.value)  # and what it does take


@pytest.mark.parametrize(
    ("hparams", "key"),
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"dropout": 1.5}, "dropout"),
        ({"mlp": [64, -1]}, "mlp"),
        ({"embedding_l2": -1.0}, "embedding_l2"),
        ({"structure": "diagonal"}, "structure"),
    ],
)
def test_invalid_values_are_config_errors(hparams: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("dcnv2", SPEC, **hparams)


def test_yaml_lists_are_accepted() -> None:
    model = build_model("xdeepfm", SPEC, mlp=[8], cin_layers=[4, 4], embed_dim=4)
    assert model(torch.tensor([[1, 2], [0, 5]])).shape == (2,)


@pytest.mark.parametrize("name", REQUIRED)
def test_sparse_tables_are_found_by_the_trainer(name: str) -> None:
    model = build_model(name, SPEC, embed_dim=4, mlp=(8,))
    sparse, dense = split_parameters(model)
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert len(sparse) == len(tables) >= 1 and all(t.sparse for t in tables)
    named = dict(model.named_parameters())
    if name != "lr":
        assert "embedding.embedding.weight" in named  # "embedding." prefix: the shared table
    assert len(sparse) + len(dense) == len(named)


def test_dense_init_xavier_draws_linear_weights_and_zeroes_biases() -> None:
    spec = FeatureSpec(cat_names=("a", "b"), cat_vocab=(5, 7))
    torch.manual_seed(0)
    default = build_model("deepfm", spec, embed_dim=4, mlp=(64, 64))
    torch.manual_seed(0)
    xavier = build_model("deepfm", spec, embed_dim=4, mlp=(64, 64), dense_init="xavier")
    lin_d = [m for m in default.modules() if type(m) is torch.nn.Linear]
    lin_x = [m for m in xavier.modules() if type(m) is torch.nn.Linear]
    assert len(lin_x) == 3
    for d, x in zip(lin_d, lin_x, strict=True):
        assert bool((x.bias == 0).all()) and not bool((d.bias == 0).all())
        fan_in, fan_out = x.weight.shape[1], x.weight.shape[0]
        if x.weight.numel() >= 1000:  # the std of a Xavier normal draw, within sampling error
            assert float(x.weight.detach().std()) == pytest.approx(
                (2 / (fan_in + fan_out)) ** 0.5, rel=0.1
            )
    # the embedding tables are not touched
    assert torch.equal(default.embedding.embedding.weight, xavier.embedding.embedding.weight)


def test_unknown_dense_init_is_a_config_error() -> None:
    spec = FeatureSpec(cat_names=("a",), cat_vocab=(5,))
    with pytest.raises(ConfigError, match="dense_init"):
        build_model("deepfm", spec, dense_init="he")
