from pathlib import Path

import pytest

from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig


def test_roundtrip_yaml(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.set("model.mlp", "256,64")
    cfg.set("loss.candidates", "ce,focal")
    cfg.set("model.cross_layers", "4")  # model-specific -> extra
    cfg.set("train.epochs", "3")
    cfg.save_yaml(tmp_path / "c.yaml")
    back = RunConfig.from_yaml(tmp_path / "c.yaml")
    assert back.to_dict() == cfg.to_dict()
    assert back.model.mlp == [256, 64]
    assert back.model.extra == {"cross_layers": 4}
    assert back.train.epochs == 3


def test_unknown_and_invalid_settings_name_the_option() -> None:
    cfg = RunConfig()
    with pytest.raises(ConfigError, match="train.epochz"):
        cfg.set("train.epochz", 3)
    with pytest.raises(ConfigError, match="optim.lr"):
        cfg.set("optim.lr", "fast")
    with pytest.raises(ConfigError, match="train.epochs"):
        cfg.set("train.epochs", 2.5)


def test_bad_yaml_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        RunConfig.from_yaml(p)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("optim.clip_norm", -1),
        ("optim.clip_norm", "inf"),
        ("optim.lr_decay_on_plateau", 0),
        ("optim.lr_decay_on_plateau", 1.5),
        ("model.dense_init", "he"),
        ("optim.lazy_embeddings", "maybe"),
    ],
)
def test_training_settings_of_the_baseline_are_checked(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RunConfig().set(key, value)
