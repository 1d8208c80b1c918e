"""Data conditions (autoloss.data.conditions): label noise and positive-rate subsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoloss.data.batches import BatchIterator
from autoloss.data.conditions import (
    MIN_TEST_POSITIVES,
    ConditionedDataset,
    Conditions,
    RowSubset,
    apply_conditions,
)
from autoloss.data.store import EncodedDataset, EncodedSplit
from autoloss.errors import ConfigError
from encoded_fixtures import write_encoded_dataset


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> EncodedDataset:
    """40,000 rows (32,000 train, 4,000 valid, 4,000 test), about half positive."""
    return EncodedDataset(write_encoded_dataset(tmp_path_factory.mktemp("big"), rows=40_000))


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> EncodedDataset:
    root = tmp_path_factory.mktemp("multi")
    return EncodedDataset(write_encoded_dataset(root, rows=20_000, num_classes=5))


def labels(ds: EncodedDataset, split: str) -> np.ndarray:
    return np.array(ds.split(split).y)


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_conditions_off_returns_the_dataset_itself(big: EncodedDataset) -> None:
    assert apply_conditions(big, Conditions(), seed=1) is big
    inert = Conditions(noise_mode="pos2neg", noise_on_valid=False, noise_seed=5)
    assert apply_conditions(big, inert, seed=1) is big


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label_noise": 1.0},
        {"label_noise": -0.1},
        {"label_noise": float("nan")},
        {"noise_mode": "flip"},
        {"pos_rate": 0.0},
        {"pos_rate": 1.0},
    ],
)
def test_invalid_conditions_are_config_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="data\\."):
        Conditions(**kwargs)  # type: ignore[arg-type]


def test_symmetric_flips_recorded_exactly_and_at_the_rate(big: EncodedDataset) -> None:
    ds = apply_conditions(big, Conditions(label_noise=0.2), seed=3)
    assert isinstance(ds, ConditionedDataset)
    summary = ds.conditions_summary()
    assert summary["noise_mode"] == "symmetric" and summary["noise_seed"] == 3
    for split in ("train", "valid"):
        changed = int(np.count_nonzero(labels(ds, split) != labels(big, split)))
        assert summary["flips"][split] == changed
        assert within_binomial(changed, len(big.split(split)), 0.2)
        assert ds.split(split).y.dtype == np.int32
        assert set(np.unique(labels(ds, split))) <= {0, 1}
    assert sorted(summary["flips"]) == ["train", "valid"]
    assert summary["rows"] == big.meta["splits"]
    # the rows themselves are the memory maps of the base dataset
    assert ds.split("train").x is big.split("train").x


def test_test_split_is_never_noisy(big: EncodedDataset) -> None:
    ds = apply_conditions(big, Conditions(label_noise=0.5), seed=0)
    assert ds.split("test") is big.split("test")
    assert labels(ds, "test").tobytes() == np.load(big.path / "test" / "y.npy").tobytes()


def test_noise_on_valid_false_leaves_valid_and_not_train(big: EncodedDataset) -> None:
    on = apply_conditions(big, Conditions(label_noise=0.3), seed=4)
    off = apply_conditions(big, Conditions(label_noise=0.3, noise_on_valid=False), seed=4)
    assert off.split("valid") is big.split("valid")
    assert isinstance(off, ConditionedDataset)
    assert sorted(off.conditions_summary()["flips"]) == ["train"]
    # per-split generators: train's flips do not depend on whether valid is drawn
    np.testing.assert_array_equal(labels(on, "train"), labels(off, "train"))


def test_noise_is_paired_by_seed_and_decoupled_by_noise_seed(big: EncodedDataset) -> None:
    a = apply_conditions(big, Conditions(label_noise=0.2), seed=7)
    b = apply_conditions(big, Conditions(label_noise=0.2), seed=7)
    c = apply_conditions(big, Conditions(label_noise=0.2), seed=8)
    np.testing.assert_array_equal(labels(a, "train"), labels(b, "train"))
    assert not np.array_equal(labels(a, "train"), labels(c, "train"))
    # train and valid draw from different streams
    n = len(big.split("valid"))
    flips_t = labels(a, "train")[:n] != labels(big, "train")[:n]
    flips_v = labels(a, "valid") != labels(big, "valid")
    assert not np.array_equal(flips_t, flips_v)
    # noise_seed: the same noise whatever the run's seed
    d = apply_conditions(big, Conditions(label_noise=0.2, noise_seed=99), seed=7)
    e = apply_conditions(big, Conditions(label_noise=0.2, noise_seed=99), seed=8)
    np.testing.assert_array_equal(labels(d, "train"), labels(e, "train"))
    assert not np.array_equal(labels(d, "train"), labels(a, "train"))
    assert isinstance(d, ConditionedDataset) and d.conditions_summary()["noise_seed"] == 99


def test_pos2neg_and_neg2pos_flip_one_way(big: EncodedDataset) -> None:
    y0 = labels(big, "train")
    p2n = labels(apply_conditions(big, Conditions(0.3, "pos2neg"), seed=1), "train")
    n2p = labels(apply_conditions(big, Conditions(0.3, "neg2pos"), seed=1), "train")
    assert not np.any((p2n == 1) & (y0 == 0))  # never creates positives
    assert not np.any((n2p == 0) & (y0 == 1))  # never removes them
    pos = int(np.count_nonzero(y0 == 1))
    assert within_binomial(int(np.count_nonzero(p2n != y0)), pos, 0.3)
    assert within_binomial(int(np.count_nonzero(n2p != y0)), len(y0) - pos, 0.3)
    # one draw per row whatever the mode: symmetric = pos2neg's flips + neg2pos's flips
    sym = labels(apply_conditions(big, Conditions(0.3), seed=1), "train")
    np.testing.assert_array_equal(sym != y0, (p2n != y0) | (n2p != y0))


def test_multiclass_symmetric_moves_to_another_class(multi: EncodedDataset) -> None:
    ds = apply_conditions(multi, Conditions(label_noise=0.25), seed=2)
    assert isinstance(ds, ConditionedDataset)
    y0, y1 = labels(multi, "train"), labels(ds, "train")
    changed = y1 != y0
    assert ds.conditions_summary()["flips"]["train"] == int(changed.sum())
    assert within_binomial(int(changed.sum()), len(y0), 0.25)  # never mapped onto itself
    assert set(np.unique(y1)) <= set(range(5))
    # the new class is uniform over the 4 others
    shift = (y1[changed] - y0[changed]) % 5
    counts = np.bincount(shift, minlength=5)
    assert counts[0] == 0
    assert all(within_binomial(int(c), int(changed.sum()), 0.25) for c in counts[1:])
    assert "positive_rate" not in ds.conditions_summary()


@pytest.mark.parametrize("mode", ["pos2neg", "neg2pos"])
def test_multiclass_refuses_one_way_noise_and_pos_rate(multi: EncodedDataset, mode: str) -> None:
    with pytest.raises(ConfigError, match=f"noise_mode={mode} is for binary"):
        apply_conditions(multi, Conditions(0.1, mode), seed=0)
    with pytest.raises(ConfigError, match="pos_rate is for binary"):
        apply_conditions(multi, Conditions(pos_rate=0.1), seed=0)


def test_pos_rate_is_exact_on_every_split(big: EncodedDataset) -> None:
    rate = 0.2
    ds = apply_conditions(big, Conditions(pos_rate=rate), seed=5)
    assert isinstance(ds, ConditionedDataset)
    summary = ds.conditions_summary()
    for split in ("train", "valid", "test"):
        base, cond = big.split(split), ds.split(split)
        y0 = np.asarray(base.y)
        neg = int(np.count_nonzero(y0 == 0))
        keep = round(rate / (1 - rate) * neg)
        y = np.asarray(cond.y)
        assert int(np.count_nonzero(y == 0)) == neg  # every negative kept
        assert int(np.count_nonzero(y == 1)) == keep
        assert len(cond) == neg + keep == summary["rows"][split] == ds.meta["splits"][split]
        assert summary["positive_rate"][split] == round(keep / (neg + keep), 6)
        assert abs(summary["positive_rate"][split] - rate) < 1e-3
        # the rows are rows of the base split, in order, with their own labels
        assert isinstance(cond.x, RowSubset)
        idx = cond.x.index
        assert np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(np.asarray(cond.x), np.asarray(base.x)[idx])
        np.testing.assert_array_equal(y, y0[idx])
    assert summary["original_rows"] == big.meta["splits"]
    assert summary["subsample_seed"] == 0


def test_pos_rate_subsample_ignores_the_run_seed(big: EncodedDataset) -> None:
    a = apply_conditions(big, Conditions(pos_rate=0.2), seed=1)
    b = apply_conditions(big, Conditions(pos_rate=0.2), seed=2)
    c = apply_conditions(big, Conditions(pos_rate=0.2, noise_seed=3), seed=1)
    xa, xb, xc = (d.split("train").x for d in (a, b, c))
    assert isinstance(xa, RowSubset) and isinstance(xb, RowSubset) and isinstance(xc, RowSubset)
    np.testing.assert_array_equal(xa.index, xb.index)
    assert not np.array_equal(xa.index, xc.index)


def test_pos_rate_then_noise(big: EncodedDataset) -> None:
    ds = apply_conditions(big, Conditions(label_noise=0.1, pos_rate=0.2), seed=1)
    sub = apply_conditions(big, Conditions(pos_rate=0.2), seed=1)
    assert isinstance(ds, ConditionedDataset)
    summary = ds.conditions_summary()
    for split in ("train", "valid"):
        changed = int(np.count_nonzero(labels(ds, split) != labels(sub, split)))
        assert summary["flips"][split] == changed > 0
    np.testing.assert_array_equal(labels(ds, "test"), labels(sub, "test"))
    assert summary["subsampled_positive_rate"] == sub.meta["positive_rate"]


def test_pos_rate_refuses_too_few_test_positives(big: EncodedDataset) -> None:
    neg = int(np.count_nonzero(np.asarray(big.split("test").y) == 0))
    rate = 0.04
    keep = round(rate / (1 - rate) * neg)
    assert keep < MIN_TEST_POSITIVES
    with pytest.raises(ConfigError, match=f"would leave {keep} positives in the test split"):
        apply_conditions(big, Conditions(pos_rate=rate), seed=0)


def test_pos_rate_above_the_natural_rate_is_refused(big: EncodedDataset) -> None:
    with pytest.raises(ConfigError, match="above the train split's natural positive rate"):
        apply_conditions(big, Conditions(pos_rate=0.9), seed=0)


def test_row_subset_reads_like_the_materialised_rows() -> None:
    base = np.arange(60, dtype=np.int32).reshape(20, 3)
    index = np.array([0, 2, 3, 7, 11, 12, 19])
    view = RowSubset(base, index)
    full = base[index]
    assert view.shape == full.shape and len(view) == 7 and view.ndim == 2
    assert view.nbytes == full.nbytes and view.dtype == np.int32
    np.testing.assert_array_equal(view[2:5], full[2:5])
    np.testing.assert_array_equal(np.take(view, np.array([1, 4, 6]), axis=0), full[[1, 4, 6]])
    np.testing.assert_array_equal(view[3], full[3])
    np.testing.assert_array_equal(view[1:4, 2], full[1:4, 2])
    np.testing.assert_array_equal(np.asarray(view), full)


def test_batches_of_a_subsampled_split_match_materialised_ones(big: EncodedDataset) -> None:
    ds = apply_conditions(big, Conditions(label_noise=0.1, pos_rate=0.3), seed=1)
    lazy = ds.split("train")
    real = EncodedSplit("train", np.asarray(lazy.x), np.asarray(lazy.y))
    for kwargs in ({"shuffle": False}, {"shuffle": True}, {"block_rows": 1000}):
        a = BatchIterator(lazy, 1000, seed=3, **kwargs)  # type: ignore[arg-type]
        b = BatchIterator(real, 1000, seed=3, **kwargs)  # type: ignore[arg-type]
        assert len(a) == len(b)
        for ba, bb in zip(a.epoch(1), b.epoch(1)):
            assert torch_equal(ba.x, bb.x) and torch_equal(ba.y, bb.y)


def torch_equal(a: object, b: object) -> bool:
    import torch

    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return bool(torch.equal(a, b))


def test_meta_and_interface_of_a_conditioned_dataset(big: EncodedDataset) -> None:
    ds = apply_conditions(big, Conditions(pos_rate=0.25), seed=0)
    assert isinstance(ds, EncodedDataset) and isinstance(ds, ConditionedDataset)
    assert ds.path == big.path and ds.spec == big.spec and ds.split_names == big.split_names
    assert ds.vocab("f0") == big.vocab("f0")
    assert ds.meta["conditions"] == ds.conditions_summary()
    assert big.meta["splits"] != ds.meta["splits"]  # the base meta is not touched
    assert "conditions" not in big.meta
    with pytest.raises(Exception, match="no split"):
        ds.split("nope")
