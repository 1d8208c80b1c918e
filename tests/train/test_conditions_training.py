"""Data conditions in training runs: the data.* keys, run_dataset, result.json, pairing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from autoloss.cli import main
from autoloss.data.conditions import ConditionedDataset
from autoloss.data.store import EncodedDataset
from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer, run_dataset
from encoded_fixtures import write_encoded_dataset


def small_cfg(data: Path, **over: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    cfg.model.name = "deepfm"
    cfg.model.embed_dim = 8
    cfg.model.mlp = [32, 32]
    cfg.loss.method = "ce"
    cfg.optim.batch_size = 128
    cfg.optim.lr = 3e-3
    cfg.train.epochs = 2
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    cfg.train.num_threads = 1
    for k, v in over.items():
        cfg.set(k.replace("__", "."), v)
    return cfg


@pytest.fixture(scope="module")
def mid_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 rows: enough test positives (>= 200) for a pos_rate of 0.3."""
    return write_encoded_dataset(tmp_path_factory.mktemp("mid"), rows=10_000)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("data.label_noise", "1.0"),
        ("data.label_noise", "-0.2"),
        ("data.noise_mode", "flip"),
        ("data.noise_on_valid", "maybe"),
        ("data.noise_seed", "1.5"),
        ("data.pos_rate", "0"),
        ("data.pos_rate", "1"),
    ],
)
def test_condition_settings_are_checked(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", "\\.")):
        RunConfig().set(key, value)


def test_condition_settings_round_trip_through_yaml(tmp_path: Path) -> None:
    cfg = RunConfig()
    for key, value in {
        "data.label_noise": "0.2",
        "data.noise_mode": "pos2neg",
        "data.noise_on_valid": "false",
        "data.noise_seed": "11",
        "data.pos_rate": "0.05",
    }.items():
        cfg.set(key, value)
    cfg.save_yaml(tmp_path / "c.yaml")
    again = RunConfig.from_yaml(tmp_path / "c.yaml")
    assert again.data == cfg.data
    assert (again.data.label_noise, again.data.noise_on_valid) == (0.2, False)
    assert (again.data.noise_seed, again.data.pos_rate) == (11, 0.05)
    # an older config.yaml without the keys reads as conditions off
    assert RunConfig.from_dict({"data": {"path": "x"}}).data.label_noise == 0.0


def test_conditions_off_leave_runs_bit_identical(tiny_dataset: Path) -> None:
    plain = small_cfg(tiny_dataset)
    assert type(run_dataset(plain)) is EncodedDataset
    # settings that only matter with a condition on change nothing
    inert = small_cfg(
        tiny_dataset,
        data__noise_mode="pos2neg",
        data__noise_on_valid=False,
        data__noise_seed=5,
    )
    t1 = Trainer(plain, log=lambda s: None)
    r1 = t1.fit()  # before the next Trainer re-seeds the global generators
    t2 = Trainer(inert, log=lambda s: None)
    assert type(t2.dataset) is EncodedDataset
    r2 = t2.fit()
    assert "conditions" not in r1 and "conditions" not in r2
    assert r1["test"] == r2["test"] and r1["valid"] == r2["valid"]
    for k, v in t1.model.state_dict().items():
        assert torch.equal(v, t2.model.state_dict()[k]), k


def test_conditioned_run_end_to_end(mid_dataset: Path, tmp_path: Path) -> None:
    cfg = small_cfg(
        mid_dataset,
        out=str(tmp_path / "run"),
        data__label_noise=0.2,
        data__pos_rate=0.3,
        train__max_steps=30,
    )
    run_dir, result = train_run(cfg, log=lambda s: None)
    expected = run_dataset(cfg)
    assert isinstance(expected, ConditionedDataset)
    want = expected.conditions_summary()
    assert result["conditions"] == want
    assert json.loads((run_dir / "result.json").read_text())["conditions"] == want
    assert want["label_noise"] == 0.2 and want["pos_rate"] == 0.3
    assert want["noise_seed"] == cfg.train.seed and want["subsample_seed"] == 0
    assert set(want["flips"]) == {"train", "valid"} and want["flips"]["train"] > 0
    assert abs(want["positive_rate"]["test"] - 0.3) < 1e-3  # the test split is not noisy
    assert want["rows"]["test"] < want["original_rows"]["test"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["label_noise"] == 0.2 and saved["data"]["pos_rate"] == 0.3
    assert np.isfinite(result["test"]["auc"]) and result["steps"] == 30
    # the run's dataset reference is the prepared dataset (one dataset for every condition)
    assert (
        json.loads((run_dir / "dataset" / "meta.json").read_text())["splits"]
        == (want["original_rows"])
    )


def test_methods_of_one_seed_see_the_same_noise(mid_dataset: Path) -> None:
    def noisy(method: str, seed: int, **over: Any) -> Trainer:
        cfg = small_cfg(
            mid_dataset,
            loss__method=method,
            train__seed=seed,
            train__max_steps=3,
            data__label_noise=0.25,
            **over,
        )
        return Trainer(cfg, log=lambda s: None)

    ce = noisy("ce", 3)
    r_ce = ce.fit()
    focal = noisy("focal", 3)
    r_focal = focal.fit()
    other = noisy("ce", 4)
    for split in ("train", "valid"):
        y_ce = np.asarray(ce.dataset.split(split).y)
        np.testing.assert_array_equal(y_ce, np.asarray(focal.dataset.split(split).y))
        assert not np.array_equal(y_ce, np.asarray(other.dataset.split(split).y))
    assert r_ce["conditions"]["flips"] == r_focal["conditions"]["flips"]
    # noise_seed: the same noise for every run seed
    a = noisy("ce", 3, data__noise_seed=8).dataset.split("train").y
    b = noisy("ce", 4, data__noise_seed=8).dataset.split("train").y
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_heavy_noise_reaches_training_but_not_the_test_labels(tiny_dataset: Path) -> None:
    """90% of train and valid labels flipped: the model learns the inverted task, and the clean
    test split shows it (AUC well below 0.5)."""
    result = Trainer(small_cfg(tiny_dataset, data__label_noise=0.9), log=lambda s: None).fit()
    assert result["test"]["auc"] < 0.4
    assert result["valid"]["auc"] > 0.6  # the valid labels are noisy too (noise_on_valid)


def test_multiclass_noise_trains(tiny_multiclass_dataset: Path) -> None:
    cfg = small_cfg(tiny_multiclass_dataset, data__label_noise=0.2, train__max_steps=10)
    result = Trainer(cfg, log=lambda s: None).fit()
    assert result["task"] == "multiclass"
    assert result["conditions"]["flips"]["train"] > 0
    assert "positive_rate" not in result["conditions"]


def test_refused_condition_is_one_line_and_leaves_no_run_dir(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    args = ["train", "--data", str(tiny_dataset), "--out", str(out), "--progress", "off"]
    assert main([*args, "--set", "data.pos_rate=0.2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "positives in the test split" in err[0], err
    assert not out.exists()
    multi = write_encoded_dataset(tmp_path / "m", num_classes=3)
    args = ["train", "--data", str(multi), "--out", str(out), "--progress", "off"]
    assert main([*args, "--set", "data.label_noise=0.1", "--set", "data.noise_mode=neg2pos"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "noise_mode=neg2pos is for binary" in err[0], err
    assert not out.exists()
