"""Each raw format on small files in its exact layout, and the protocol details."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from autoloss.data.prepare import prepare, split_of_rows
from autoloss.data.store import EncodedDataset

from .conftest import (
    MOVIES_CSV,
    SCHEMA_YAML,
    avazu_text,
    criteo_line,
    criteo_text,
    write_raw,
)


def decoded(ds: EncodedDataset, split: str, field: str) -> list[str]:
    """The raw tokens of a categorical column (OOV -> '<oov>')."""
    names = ds.spec.cat_names
    values = ds.vocab(field)["values"]
    ids = np.asarray(ds.split(split).x[:, names.index(field)])
    return ["<oov>" if i == 0 else values[i - 1] for i in ids]


def test_criteo_integer_rule_and_empty_token(tmp_path: Path) -> None:
    ints = ["0", "1", "2", "3", "10", "100", "-1", "", "5"]
    lines = "".join(
        criteo_line(i % 2, [v] + ["1"] * 12, ["68fd1e64", "", *["a"] * 24])
        for i, v in enumerate(ints)
    )
    path = write_raw(tmp_path / "train.txt.gz", lines)
    prepare("criteo", path, tmp_path / "out", min_count=1, split="1:0:0")
    ds = EncodedDataset(tmp_path / "out")
    expected = [str(v) for v in (0, 1, 2, 1, 5, 21, -1)] + ["", str(math.floor(math.log(5) ** 2))]
    assert decoded(ds, "train", "I1") == expected
    assert decoded(ds, "train", "C2") == [""] * len(ints)  # empty is a token of its own
    meta = ds.meta
    assert meta["format"] == "criteo" and meta["splits"] == {"train": 9, "valid": 0, "test": 0}
    assert [f["name"] for f in meta["fields"]][:2] == ["I1", "I2"]
    assert meta["fields"][0]["bucketing"] == "ln2"
    assert ds.split("train").y.tolist() == [i % 2 for i in range(9)]
    assert meta["inputs"][0]["sha256"] and meta["protocol"]["min_count"] == 1


def test_criteo_min_count_oov_and_frequency_order(tmp_path: Path) -> None:
    cats = ["aa"] * 5 + ["bb"] * 3 + ["cc"]  # cc is rare
    lines = "".join(criteo_line(0, ["1"] * 13, [c] * 26) for c in cats)
    path = write_raw(tmp_path / "t.txt", lines)
    prepare("criteo", path, tmp_path / "out", min_count=2, split="1:0:0")
    ds = EncodedDataset(tmp_path / "out")
    assert ds.vocab("C1")["values"] == ["aa", "bb"]  # most frequent first
    assert ds.split("train").x[:, 13].tolist() == [1] * 5 + [2] * 3 + [0]
    assert ds.spec.cat_vocab[13] == 3


def test_criteo_default_min_count_is_10(criteo_file: Path, tmp_path: Path) -> None:
    r = prepare("criteo", criteo_file, tmp_path / "out")
    assert r.meta["protocol"]["min_count"] == 10
    assert all(f["min_count"] == 10 for f in r.meta["fields"])
    assert sum(r.splits.values()) == 300


def test_min_count_counts_training_rows_only(frappe_dir: Path, tmp_path: Path) -> None:
    # "lonely" appears many times but only in valid/test: it must be OOV.
    valid = write_raw(
        tmp_path / "v.csv",
        "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city\n"
        + "1,lonely,1,morning,monday,workday,unknown,free,sunny,Spain,0\n" * 5,
    )
    prepare("frappe", frappe_dir / "train.csv.gz", tmp_path / "out", valid=valid, test=valid)
    ds = EncodedDataset(tmp_path / "out")
    assert "lonely" not in ds.vocab("user")["values"]
    assert ds.split("valid").x[:, 0].tolist() == [0] * 5


def test_split_is_seeded_and_deterministic(criteo_file: Path, tmp_path: Path) -> None:
    a = prepare("criteo", criteo_file, tmp_path / "a", seed=1, min_count=1)
    b = prepare("criteo", criteo_file, tmp_path / "b", seed=1, min_count=1, chunk_rows=7)
    c = prepare("criteo", criteo_file, tmp_path / "c", seed=2, min_count=1)
    assert a.splits == b.splits
    for s in ("train", "valid", "test"):
        assert np.array_equal(EncodedDataset(a.path).split(s).x, EncodedDataset(b.path).split(s).x)
    assert not np.array_equal(
        EncodedDataset(a.path).split("test").x, EncodedDataset(c.path).split("test").x
    )


def test_split_hash_proportions() -> None:
    s = split_of_rows(0, 200_000, 2021, (8, 1, 1))
    frac = np.bincount(s, minlength=3) / s.size
    assert np.allclose(frac, [0.8, 0.1, 0.1], atol=0.005)
    # Independent of how the rows are chunked:
    assert np.array_equal(s[1000:2000], split_of_rows(1000, 1000, 2021, (8, 1, 1)))


def test_avazu_hour_fields(tmp_path: Path) -> None:
    # 14102100: 2014-10-21 (Tuesday) 00h; 14102523: 2014-10-25 (Saturday) 23h.
    path = write_raw(tmp_path / "a.csv", avazu_text(4, hours=["14102100", "14102523"]))
    prepare("avazu", path, tmp_path / "out", min_count=1, split="1:0:0")
    ds = EncodedDataset(tmp_path / "out")
    assert ds.spec.cat_names[:3] == ("hour", "weekday", "is_weekend")
    assert "id" not in ds.spec.cat_names and "click" not in ds.spec.cat_names
    assert decoded(ds, "train", "hour") == ["0", "23", "0", "23"]
    assert decoded(ds, "train", "weekday") == ["1", "5", "1", "5"]  # Monday = 0
    assert decoded(ds, "train", "is_weekend") == ["0", "1", "0", "1"]
    assert len(ds.spec.cat_names) == 3 + 21


def test_avazu_default_min_count(avazu_file: Path, tmp_path: Path) -> None:
    r = prepare("avazu", avazu_file, tmp_path / "out")
    assert r.meta["protocol"]["min_count"] == 4 and r.meta["label"] == "click"


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_movielens_labels_and_movies(tmp_path: Path, task: str) -> None:
    ratings = "userId,movieId,rating,timestamp\n" + "".join(
        f"1,{m},{r},1\n" for m, r in [(1, 0.5), (2, 1.5), (3, 3.5), (1, 4.0), (4, 4.5), (9, 5.0)]
    )
    d = tmp_path / "ml"
    write_raw(d / "ratings.csv", ratings)
    write_raw(d / "movies.csv", MOVIES_CSV)
    r = prepare(
        "movielens", d / "ratings.csv", tmp_path / "out", task=task, min_count=1, split="1:0:0"
    )
    ds = EncodedDataset(r.path)
    y = ds.split("train").y.tolist()
    if task == "binary":
        assert y == [0, 0, 0, 1, 1, 1] and ds.meta["num_classes"] == 2
    else:
        assert y == [0, 1, 3, 3, 4, 4] and ds.meta["num_classes"] == 5  # half stars rounded up
    assert ds.spec.cat_names == ("userId", "movieId", "year")
    assert ds.spec.bag_names == ("genres",)
    assert decoded(ds, "train", "year") == ["1995", "1995", "1995", "1995", "", ""]
    bags = ds.split("train").bags
    genres = ds.vocab("genres")["values"]
    first = [genres[i - 1] for i in bags[0, 0] if i > 0]
    assert first == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert bags.shape == (6, 1, 5) and (bags[5] == -1).all()  # movie 9 is not in movies.csv
    assert "timestamp" not in ds.spec.cat_names


def test_movielens_dat_format(tmp_path: Path) -> None:
    text = "".join(
        f"{u}::{m}::{r}::97830076{u}\n" for u, m, r in [(1, 1193, 5), (1, 661, 3), (2, 1193, 4)]
    )
    path = write_raw(tmp_path / "ratings.dat", text)
    r = prepare("movielens", path, tmp_path / "out", min_count=1, split="1:0:0")
    ds = EncodedDataset(r.path)
    assert ds.spec.cat_names == ("userId", "movieId")  # no movies.dat beside it
    assert ds.split("train").y.tolist() == [1, 0, 1]
    assert decoded(ds, "train", "movieId") == ["1193", "661", "1193"]


def test_movielens_default_rows(movielens_dir: Path, tmp_path: Path) -> None:
    r = prepare("movielens", movielens_dir / "ratings.csv", tmp_path / "out")
    assert sum(r.splits.values()) == 400 and r.meta["protocol"]["seed"] == 2021
    assert r.meta["protocol"]["split"] == [8.0, 1.0, 1.0]
    assert {i["split"] for i in r.meta["inputs"]} == {"all", "side"}


def test_frappe_pre_split_gz(frappe_dir: Path, tmp_path: Path) -> None:
    r = prepare(
        "frappe",
        frappe_dir / "train.csv.gz",
        tmp_path / "out",
        valid=frappe_dir / "valid.csv.gz",
        test=frappe_dir / "test.csv.gz",
    )
    assert r.splits == {"train": 300, "valid": 80, "test": 60}
    ds = EncodedDataset(r.path)
    assert len(ds.spec.cat_names) == 10 and ds.meta["protocol"]["min_count"] == 2
    assert ds.meta["protocol"]["split"] == "pre-split"
    for f in ds.meta["fields"]:
        vocab = json.loads((r.path / "vocab" / f"{f['name']}.json").read_text())
        assert len(vocab["values"]) + 1 == f["vocab_size"]
    assert 0 < ds.meta["positive_rate"]["train"] < 1


def test_csv_schema_numeric_buckets_dense_and_bags(
    csv_files: tuple[Path, Path], tmp_path: Path
) -> None:
    data, schema = csv_files
    r = prepare("csv", data, tmp_path / "out", schema=schema, split="1:0:0")
    ds = EncodedDataset(r.path)
    spec = ds.spec
    assert spec.cat_names == ("user", "item", "count", "price", "views")
    assert spec.dense_names == ("score",) and spec.bag_names == ("tags",)
    tr = ds.split("train")
    # Dense: standardised on train.
    assert abs(float(tr.dense[:, 0].mean())) < 1e-4 and abs(float(tr.dense[:, 0].std()) - 1) < 1e-3
    # Quantile: 4 buckets of roughly equal size, ids 1..4 (5 = missing).
    price = np.asarray(tr.x[:, 3])
    counts = np.bincount(price, minlength=6)
    assert counts[0] == 0 and counts[5] == 0 and (abs(counts[1:5] - 100) <= 15).all()
    # ln2 bucketing on "count": decode and compare with the rule.
    import pandas as pd

    raw = pd.read_csv(data)
    tokens = decoded(ds, "train", "count")
    for v, t in zip(raw["count"], tokens):
        if np.isnan(v):
            assert t == ""
        else:
            want = math.floor(math.log(v) ** 2) if v > 2 else int(v)
            assert t == str(want)
    # log2: sign(v) * floor(log2(1 + |v|)).
    views = decoded(ds, "train", "views")
    assert all(t == str(int(np.floor(np.log2(1 + v)))) for v, t in zip(raw["views"], views))
    # Bags: tokens of each row, padded with -1.
    tags = ds.vocab("tags")["values"]
    for i in range(20):
        want = [] if pd.isna(raw["tags"][i]) else raw["tags"][i].split("|")
        got = [tags[j - 1] for j in tr.bags[i, 0] if j != -1]
        assert got == want
    # Per-column min_count from the schema.
    assert {f["name"]: f.get("min_count") for f in ds.meta["fields"]}["item"] == 2
    assert ds.meta["protocol"]["schema"]["label"] == "click"


def test_csv_multiclass_schema(tmp_path: Path) -> None:
    data = write_raw(tmp_path / "d.csv", "y,a\n0,x\n2,y\n1,x\n")
    schema = write_raw(
        tmp_path / "s.yaml", "label: y\ntask: multiclass\nnum_classes: 3\ncategorical: [a]\n"
    )
    r = prepare("csv", data, tmp_path / "out", schema=schema, split="1:0:0")
    assert r.meta["num_classes"] == 3 and EncodedDataset(r.path).split("train").y.tolist() == [
        0,
        2,
        1,
    ]


def test_compressed_inputs_bz2(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "t.txt.bz2", criteo_text(50))
    r = prepare("criteo", path, tmp_path / "out", min_count=1)
    assert sum(r.splits.values()) == 50


def test_several_inputs_are_read_as_one(tmp_path: Path) -> None:
    a = write_raw(tmp_path / "day0.txt", criteo_text(40, seed=1))
    b = write_raw(tmp_path / "day1.txt", criteo_text(60, seed=2))
    r = prepare("criteo", [a, b], tmp_path / "out", min_count=1)
    assert sum(r.splits.values()) == 100 and len(r.meta["inputs"]) == 2


def test_schema_file_is_validated(tmp_path: Path) -> None:
    from autoloss.errors import SchemaError

    data = write_raw(tmp_path / "d.csv", "y,a\n0,x\n")
    for bad in ("label: 3\n", "label: y\nnumeric: {a: cube}\n", "label: y\nbogus: 1\n", "[1, 2]\n"):
        schema = write_raw(tmp_path / "s.yaml", bad)
        with pytest.raises(SchemaError, match=r"s\.yaml"):
            prepare("csv", data, tmp_path / "out", schema=schema)
    assert SCHEMA_YAML  # the fixture schema is exercised above


def _files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != "meta.json"
    }


@pytest.mark.parametrize("kind", ["criteo", "csv"])
def test_output_does_not_depend_on_chunking_or_workers(
    kind: str, criteo_file: Path, csv_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """Chunk-local ids are unified after the pass, fields are encoded by a pool of threads:
    the dataset (arrays, vocabularies, ids) must be byte-identical whatever the chunk size and
    the number of workers."""
    if kind == "criteo":
        args: dict = dict(format="criteo", inputs=criteo_file, min_count=2)
    else:
        data, schema = csv_files
        args = dict(format="csv", inputs=data, schema=schema)
    runs = [(262_144, 1), (7, 3), (50, 0), (1, 2)]
    outs = [
        prepare(**args, out=tmp_path / f"o{i}", chunk_rows=c, workers=w)
        for i, (c, w) in enumerate(runs)
    ]
    ref = _files(outs[0].path)
    assert any(k.startswith("vocab/") for k in ref) and any(k.endswith("x.npy") for k in ref)
    for r in outs[1:]:
        assert _files(r.path) == ref
        assert r.meta["fields"] == outs[0].meta["fields"] and r.splits == outs[0].splits


def test_many_fields_under_a_low_open_file_limit(tmp_path: Path) -> None:
    """Per-field spill files are opened per append, never held: 300 fields prepare under a
    limit of 128 open files (3 files per field held open would need 900)."""
    resource = pytest.importorskip("resource")
    n_fields = 300
    rng = np.random.default_rng(0)
    header = "label," + ",".join(f"f{i}" for i in range(n_fields))
    rows = [
        f"{i % 2}," + ",".join(f"v{int(x)}" for x in rng.integers(0, 5, n_fields))
        for i in range(40)
    ]
    data = write_raw(tmp_path / "wide.csv", "\n".join([header, *rows]) + "\n")
    schema = write_raw(
        tmp_path / "schema.yaml",
        "label: label\ncategorical: [" + ", ".join(f"f{i}" for i in range(n_fields)) + "]\n",
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, hard), hard))
    try:
        r = prepare("csv", data, tmp_path / "out", schema=schema, chunk_rows=8, split="1:0:0")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    ds = EncodedDataset(r.path)
    assert ds.split("train").x.shape == (40, n_fields)
    want = [row.split(",")[1 + 7] for row in rows]
    assert decoded(ds, "train", "f7") == want
