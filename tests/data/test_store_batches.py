"""EncodedDataset and BatchIterator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from autoloss.data.batches import BatchIterator
from autoloss.data.prepare import prepare
from autoloss.data.store import EncodedDataset, EncodedSplit
from autoloss.errors import ConfigError, DataError

from .conftest import criteo_text, write_raw


def fake_split(n: int, fields: int = 3, bags: bool = False) -> EncodedSplit:
    x = np.arange(n * fields, dtype=np.int32).reshape(n, fields)
    return EncodedSplit(
        "train",
        x,
        np.arange(n, dtype=np.int32),
        dense=np.arange(n, dtype=np.float32)[:, None],
        bags=np.repeat(np.arange(n, dtype=np.int32)[:, None, None], 2, axis=2) if bags else None,
    )


def rows_of(it: BatchIterator, epoch: int) -> np.ndarray:
    return np.concatenate([b.y.numpy() for b in it.epoch(epoch)])


@pytest.fixture
def dataset(tmp_path: Path) -> EncodedDataset:
    path = write_raw(tmp_path / "t.txt", criteo_text(200))
    prepare("criteo", path, tmp_path / "ds", min_count=1)
    return EncodedDataset(tmp_path / "ds")


def test_encoded_dataset_reads_memmaps(dataset: EncodedDataset) -> None:
    train = dataset.split("train")
    assert isinstance(train.x, np.memmap) and train.x.dtype == np.int32
    assert train.x.shape == (len(train), 39) and len(train) == dataset.meta["splits"]["train"]
    assert dataset.spec.cat_vocab == tuple(f["vocab_size"] for f in dataset.meta["fields"])
    assert int(train.x.max(axis=0).max()) < max(dataset.spec.cat_vocab)
    assert (np.asarray(train.x) < np.asarray(dataset.spec.cat_vocab)).all()
    assert train.dense is None and train.bags is None
    with pytest.raises(DataError, match="no split"):
        dataset.split("holdout")


def test_encoded_dataset_errors(tmp_path: Path, dataset: EncodedDataset) -> None:
    with pytest.raises(DataError, match="no such encoded dataset"):
        EncodedDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"meta\.json is missing"):
        EncodedDataset(tmp_path / "empty")
    meta = dataset.path / "meta.json"
    meta.write_text("{not json")
    with pytest.raises(DataError, match=r"corrupt meta\.json"):
        EncodedDataset(dataset.path)


def test_truncated_array_is_reported(dataset: EncodedDataset) -> None:
    x = dataset.path / "valid" / "x.npy"
    x.write_bytes(x.read_bytes()[:200])
    with pytest.raises(DataError, match=r"x\.npy"):
        EncodedDataset(dataset.path).split("valid")
    meta = json.loads((dataset.path / "meta.json").read_text())
    meta["splits"]["test"] += 1
    (dataset.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="expected"):
        EncodedDataset(dataset.path).split("test")


@pytest.mark.parametrize("block_rows", [None, 64])
def test_every_row_once_per_epoch_and_seeded(block_rows: int | None) -> None:
    split = fake_split(1000)
    it = BatchIterator(split, 128, seed=3, block_rows=block_rows)
    assert len(it) == 8
    r0 = rows_of(it, 0)
    assert np.array_equal(np.sort(r0), np.arange(1000))
    assert np.array_equal(r0, rows_of(BatchIterator(split, 128, seed=3, block_rows=block_rows), 0))
    assert not np.array_equal(r0, rows_of(it, 1))
    assert not np.array_equal(
        r0, rows_of(BatchIterator(split, 128, seed=4, block_rows=block_rows), 0)
    )
    for b in it.epoch(2):  # all arrays of a batch stay aligned
        assert np.array_equal(b.x[:, 0].numpy(), b.y.numpy() * 3)
        assert np.array_equal(b.dense[:, 0].numpy(), b.y.numpy().astype(np.float32))
        assert b.x.dtype.is_floating_point is False and str(b.x.dtype) == "torch.int64"


def test_block_shuffle_keeps_blocks_local() -> None:
    it = BatchIterator(fake_split(1000), 100, seed=0, block_rows=100, buffer_blocks=1)
    for b in it.epoch(0):  # one block per batch: all rows from one block of 100
        assert len(set((b.y.numpy() // 100).tolist())) == 1


def test_no_shuffle_is_contiguous_and_drop_last() -> None:
    it = BatchIterator(fake_split(1050, bags=True), 100, shuffle=False)
    assert len(it) == 11 and np.array_equal(rows_of(it, 0), np.arange(1050))
    last = list(it.epoch(0))[-1]
    assert len(last) == 50 and last.bags is not None and tuple(last.bags.shape) == (50, 1, 2)
    it = BatchIterator(fake_split(1050), 100, shuffle=False, drop_last=True)
    assert len(it) == 10 and len(rows_of(it, 0)) == 1000


@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_are_disjoint_equal_and_cover(shuffle: bool) -> None:
    split = fake_split(1003)
    shards = [
        rows_of(BatchIterator(split, 64, shuffle=shuffle, seed=5, rank=r, world_size=4), 1)
        for r in range(4)
    ]
    assert {len(s) for s in shards} == {250}  # the remainder (3 rows) is dropped
    assert (
        len({len(list(BatchIterator(split, 64, rank=r, world_size=4).epoch(0))) for r in range(4)})
        == 1
    )
    union = np.concatenate(shards)
    assert len(np.unique(union)) == 1000


def test_bad_iterator_options() -> None:
    with pytest.raises(ConfigError):
        BatchIterator(fake_split(10), 0)
    with pytest.raises(ConfigError):
        BatchIterator(fake_split(10), 2, rank=2, world_size=2)


def test_iterator_over_a_memmap_yields_every_row_once(tmp_path: Path) -> None:
    """1M rows x 39 fields from a memmap (its speed: benchmarks/batch_iterator.py)."""
    n = 1_000_000
    x = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.int32, (n, 39))
    x[:, 0] = np.arange(n)
    x.flush()
    split = EncodedSplit("train", np.load(tmp_path / "x.npy", mmap_mode="r"), np.zeros(n, np.int32))
    seen = np.concatenate([b.x[:, 0].numpy() for b in BatchIterator(split, 2000, seed=0).epoch(0)])
    assert len(seen) == n and np.array_equal(np.sort(seen), np.arange(n))
