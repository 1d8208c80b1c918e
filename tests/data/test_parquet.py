"""Parquet input for the csv and frappe formats (docs/data.md): same encoding as CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
import pyarrow.parquet as pq
import pytest

from autoloss.data.encoder import RowEncoder
from autoloss.data.prepare import prepare
from autoloss.data.store import EncodedDataset
from autoloss.errors import ConfigError, DataError, SchemaError

from .conftest import criteo_text, frappe_text, write_raw


def to_parquet(csv_path: Path, out: Path, row_group: int = 64) -> Path:
    """The CSV's table (types inferred: ints, floats, strings, nulls) as Parquet with small
    row groups, so that reading takes several batches."""
    pq.write_table(pv.read_csv(csv_path), out, row_group_size=row_group)
    return out


def same_dataset(a: Path, b: Path) -> None:
    da, db = EncodedDataset(a), EncodedDataset(b)
    assert da.meta["splits"] == db.meta["splits"]
    for split in ("train", "valid", "test"):
        sa, sb = da.split(split), db.split(split)
        for name in ("x", "y", "dense", "bags"):
            xa, xb = getattr(sa, name), getattr(sb, name)
            assert (xa is None) == (xb is None), name
            if xa is not None:
                np.testing.assert_array_equal(np.asarray(xa), np.asarray(xb), err_msg=name)
    for f in da.meta["fields"]:
        if f["kind"] != "dense":
            assert da.vocab(f["name"])["values"] == db.vocab(f["name"])["values"], f["name"]


def test_csv_schema_parquet_matches_csv(csv_files: tuple[Path, Path], tmp_path: Path) -> None:
    data, schema = csv_files
    table = pv.read_csv(data)
    assert pa.types.is_floating(table.schema.field("price").type)  # numbers stay numbers
    parquet = to_parquet(data, tmp_path / "data.parquet")
    a = prepare("csv", data, tmp_path / "a", schema=schema, chunk_rows=100)
    b = prepare("csv", parquet, tmp_path / "b", schema=schema, chunk_rows=100)
    same_dataset(a.path, b.path)
    ds = EncodedDataset(b.path)
    assert ds.spec.bag_names == ("tags",) and ds.spec.dense_names == ("score",)
    assert sum(b.splits.values()) == 400 and b.meta["inputs"][0]["path"].endswith(".parquet")
    # New rows from a Parquet file encode like the prepared ones.
    enc = RowEncoder(b.path).encode_file(parquet)
    x_all = np.concatenate([np.asarray(ds.split(s).x) for s in ("train", "valid", "test")])
    assert sorted(map(tuple, enc.x.tolist())) == sorted(map(tuple, x_all.tolist()))


def test_frappe_pre_split_parquet_matches_csv(tmp_path: Path) -> None:
    files = {}
    for name, n, seed in (("train", 300, 1), ("valid", 80, 2), ("test", 60, 3)):
        csv_path = write_raw(tmp_path / f"{name}.csv", frappe_text(n, seed))
        files[name] = (csv_path, to_parquet(csv_path, tmp_path / f"{name}.parquet", 50))
    assert pa.types.is_integer(pq.read_schema(files["train"][1]).field("user").type)
    a = prepare(
        "frappe", files["train"][0], tmp_path / "a", valid=files["valid"][0], test=files["test"][0]
    )
    b = prepare(
        "frappe", files["train"][1], tmp_path / "b", valid=files["valid"][1], test=files["test"][1]
    )
    assert b.splits == {"train": 300, "valid": 80, "test": 60}
    same_dataset(a.path, b.path)


def test_parquet_missing_schema_column(csv_files: tuple[Path, Path], tmp_path: Path) -> None:
    data, schema = csv_files
    table = pv.read_csv(data).drop_columns(["item"])
    pq.write_table(table, tmp_path / "no_item.parquet")
    with pytest.raises(SchemaError, match="'item' is absent") as err:
        prepare("csv", tmp_path / "no_item.parquet", tmp_path / "out", schema=schema)
    assert err.value.column == "item" and str(err.value.path).endswith("no_item.parquet")
    frappe = pv.read_csv(write_raw(tmp_path / "f.csv", frappe_text(20, 0))).drop_columns(["label"])
    pq.write_table(frappe, tmp_path / "f.parquet")
    with pytest.raises(DataError, match="'label' is absent"):
        prepare("frappe", tmp_path / "f.parquet", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_parquet_bad_values_and_files(csv_files: tuple[Path, Path], tmp_path: Path) -> None:
    data, schema = csv_files
    table = pv.read_csv(data)
    labels = table.column("click").to_pylist()
    labels[150] = 7  # not 0/1: data row 151
    bad = table.set_column(0, "click", pa.array(labels))
    pq.write_table(bad, tmp_path / "bad.parquet", row_group_size=64)
    with pytest.raises(DataError, match="label is not 0 or 1") as err:
        prepare("csv", tmp_path / "bad.parquet", tmp_path / "out", schema=schema, chunk_rows=64)
    assert err.value.line == 151
    r = prepare("csv", tmp_path / "bad.parquet", tmp_path / "out", schema=schema, on_bad_row="skip")
    assert r.bad_rows["total"] == 1 and sum(r.splits.values()) == 399
    pq.write_table(table.slice(0, 0), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match="no data rows"):
        prepare("csv", tmp_path / "empty.parquet", tmp_path / "out2", schema=schema)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read Parquet"):
        prepare("csv", tmp_path / "junk.parquet", tmp_path / "out2", schema=schema)
    with pytest.raises(DataError, match="no such file"):
        prepare("csv", tmp_path / "missing.parquet", tmp_path / "out2", schema=schema)
    assert not (tmp_path / "out2").exists()


def test_parquet_only_for_csv_and_frappe(tmp_path: Path) -> None:
    src = write_raw(tmp_path / "c.txt", criteo_text(10))
    pq.write_table(
        pv.read_csv(
            src,
            parse_options=pv.ParseOptions(delimiter="\t"),
            read_options=pv.ReadOptions(autogenerate_column_names=True),
        ),
        tmp_path / "c.parquet",
    )
    with pytest.raises(ConfigError, match="Parquet input is for csv and frappe"):
        prepare("criteo", tmp_path / "c.parquet", tmp_path / "out")
