"""``prepare --split temporal``: the past in train, the future in valid and test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.data.prepare import prepare
from autoloss.data.splits import parse_split_option, time_cuts
from autoloss.data.store import SPLITS, EncodedDataset
from autoloss.errors import ConfigError, DataError

from .conftest import write_raw
from .test_implicit import implicit_tables, movies_csv

SCHEMA = "label: y\ncategorical: [user, item]\nnumeric: {t: none}\ntime: t\n"


def csv_rows(n: int, seed: int = 0, ties: int = 0) -> list[tuple[int, int, int, int]]:
    """(y, user, item, t) rows in a shuffled time order; ``ties`` rows share each of a few
    times (so that rows tie at the cuts)."""
    rng = np.random.default_rng(seed)
    times = rng.permutation(n) + 1000
    if ties:
        times = 1000 + rng.permutation(n) // ties  # groups of ``ties`` rows per time
    return [
        (int(rng.random() < 0.3), int(rng.integers(0, 20)), int(rng.integers(0, 50)), int(t))
        for t in times
    ]


def write_csv(d: Path, rows: list[tuple[int, int, int, int]]) -> tuple[Path, Path]:
    text = "y,user,item,t\n" + "".join(f"{y},u{u},i{i},{t}\n" for y, u, i, t in rows)
    return write_raw(d / "data.csv", text), write_raw(d / "schema.yaml", SCHEMA)


def times_of(ds: EncodedDataset, name: str) -> np.ndarray:
    """The rows' times, read back from the dense copy of the time column."""
    field = next(f for f in ds.meta["fields"] if f["name"] == "t")
    dense = np.asarray(ds.split(name).dense, dtype=np.float64)[:, 0]
    return np.round(dense * field["std"] + field["mean"])


def test_parse_split_option() -> None:
    assert parse_split_option("temporal") == ((8.0, 1.0, 1.0), True)
    assert parse_split_option("temporal:6:2:2") == ((6.0, 2.0, 2.0), True)
    assert parse_split_option("7:2:1") == ((7.0, 2.0, 1.0), False)
    with pytest.raises(ConfigError, match="--split"):
        parse_split_option("temporal:x")


def test_time_cuts_lower_quantiles_and_ties() -> None:
    cuts = time_cuts(np.arange(1.0, 101.0), (8, 1, 1))
    assert (cuts.train_end, cuts.valid_end) == (80.0, 90.0)
    assert cuts.of_times(np.array([80.0, 80.5, 90.0, 91.0])).tolist() == [0, 1, 1, 2]
    assert time_cuts(np.arange(10.0), (1, 0, 1)).as_list() == [4, 4]  # no valid rows


@pytest.mark.parametrize("ties", [0, 7])
def test_csv_past_in_train_future_in_valid_and_test(tmp_path: Path, ties: int) -> None:
    rows = csv_rows(1000, ties=ties)
    data, schema = write_csv(tmp_path, rows)
    r = prepare("csv", data, tmp_path / "out", schema=schema, split="temporal", chunk_rows=64)
    ds = EncodedDataset(r.path)
    t = {name: times_of(ds, name) for name in SPLITS}
    # strictly: rows that tie at a cut all go to the earlier split
    assert t["train"].max() < t["valid"].min() and t["valid"].max() < t["test"].min()
    # proportions: 8:1:1 exactly with distinct times, within a tie group with ties
    slack = ties
    for name, share in zip(SPLITS, (800, 100, 100)):
        assert abs(r.splits[name] - share) <= slack, (name, r.splits)
    temporal = r.meta["protocol"]["temporal"]
    assert temporal["time_column"] == "t" and temporal["cuts"] == [
        t["train"].max(),
        t["valid"].max(),
    ]
    assert temporal["time_range"]["test"] == [t["test"].min(), t["test"].max()]
    assert r.meta["protocol"]["split"] == [8, 1, 1]
    # rows keep file order inside each split: the labels are those of the rows of its times
    for name in SPLITS:
        mine = set(t[name].tolist())
        want = [y for y, *_, tt in rows if tt in mine]
        assert np.asarray(ds.split(name).y).tolist() == want


def _arrays(path: Path) -> dict[str, bytes]:
    ds = EncodedDataset(path)
    return {
        name: b"".join(
            np.asarray(a).tobytes()
            for a in (ds.split(name).x, ds.split(name).y, ds.split(name).dense)
        )
        for name in SPLITS
    }


@pytest.mark.parametrize("sample", [None, 50], ids=["every-value", "sampled"])
def test_independent_of_chunk_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample: int | None
) -> None:
    monkeypatch.setattr("autoloss.data.readers._BLOCK", 256)  # small blocks: real chunks
    if sample is not None:  # quantiles from a sample of the times (bounded memory)
        monkeypatch.setattr("autoloss.data.parse_pass.QUANTILE_SAMPLE", sample)
    data, schema = write_csv(tmp_path, csv_rows(700, seed=3))
    metas, chunks = [], []
    for size in (13, 64, 100_000):
        seen: list[int] = []
        out = tmp_path / f"out{size}"
        kw: dict[str, Any] = {"schema": schema, "split": "temporal", "chunk_rows": size}
        metas.append(prepare("csv", data, out, progress=seen.append, **kw).meta)
        chunks.append(len(seen))
    assert chunks[0] > chunks[1] > chunks[2] == 1
    assert _arrays(tmp_path / "out13") == _arrays(tmp_path / "out64")
    assert _arrays(tmp_path / "out13") == _arrays(tmp_path / "out100000")
    temporal = [m["protocol"]["temporal"] for m in metas]
    assert temporal[0] == temporal[1] == temporal[2]
    assert ("sample" in temporal[0]["quantiles_of"]) == (sample is not None)
    if sample is not None:  # approximately the proportions
        assert abs(metas[0]["splits"]["train"] - 560) < 100


def ratings_text(rows: list[tuple[int, int, float, int]]) -> str:
    return "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{r},{t}\n" for u, m, r, t in rows
    )


def test_movielens_temporal(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = [
        (int(rng.integers(1, 30)), int(rng.integers(1, 41)), float(rng.integers(1, 11) / 2), t)
        for t in (10**9 + rng.permutation(500) * 3600)
    ]
    path = write_raw(tmp_path / "ml" / "ratings.csv", ratings_text(rows))
    write_raw(tmp_path / "ml" / "movies.csv", movies_csv())
    r = prepare("movielens", path, tmp_path / "out", split="temporal:6:2:2", chunk_rows=33)
    assert r.splits == {"train": 300, "valid": 100, "test": 100}
    ranges = r.meta["protocol"]["temporal"]["time_range"]
    assert ranges["train"][1] < ranges["valid"][0] <= ranges["valid"][1] < ranges["test"][0]
    times = np.array([t for *_, t in rows], dtype=np.float64)
    split = time_cuts(times, (6, 2, 2)).of_times(times)
    ds = EncodedDataset(r.path)
    for s, name in enumerate(SPLITS):  # the labels of the rows of each split, in file order
        want = [int(rt >= 4) for (_, _, rt, _), k in zip(rows, split) if k == s]
        assert np.asarray(ds.split(name).y).tolist() == want


def test_implicit_temporal(tmp_path: Path) -> None:
    from .test_implicit import implicit_ratings

    rows = implicit_ratings()
    path = write_raw(tmp_path / "ml" / "ratings.csv", ratings_text(rows))
    write_raw(tmp_path / "ml" / "movies.csv", movies_csv())
    built, tables = implicit_tables(path, tmp_path / "imp", temporal=True)
    when = {(u, m): t for u, m, _, t in rows}
    ranges = {}
    for name in SPLITS:
        table = tables[name]
        assert table[0][2] == 1  # each positive is followed by its own negatives
        times = [when[(u, m)] for u, m, y in table if y == 1]
        ranges[name] = (min(times), max(times))
    assert ranges["train"][1] < ranges["valid"][0] and ranges["valid"][1] < ranges["test"][0]
    assert built.temporal["time_range"] == {k: list(v) for k, v in ranges.items()}
    r = prepare("movielens", path, tmp_path / "out", task="implicit", split="temporal")
    protocol = r.meta["protocol"]
    assert protocol["temporal"]["cuts"] == [ranges["train"][1], ranges["valid"][1]]
    assert protocol["implicit"]["positives"] == {
        k: sum(y for *_, y in v) for k, v in tables.items()
    }


CLI_ERRORS: dict[str, tuple[list[str], str]] = {
    "criteo": (["--format", "criteo"], "use --format csv with 'time: COLUMN'"),
    "csv-no-time": (
        ["--format", "csv", "--schema", "{schema}"],
        "add 'time: COLUMN' to the schema",
    ),
    "pre-split": (["--format", "movielens", "--valid", "{data}", "--test", "{data}"], "pre-split"),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    data = write_raw(tmp_path / "d.csv", "y,a\n0,x\n1,y\n")
    schema = write_raw(tmp_path / "s.yaml", "label: y\ncategorical: [a]\n")
    args, needle = CLI_ERRORS[case]
    args = [a.format(schema=schema, data=data) for a in args]
    argv = ["prepare", *args, "--input", str(data), "--split", "temporal"]
    rc = main([*argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("autoloss prepare: error:") and needle in err
    assert not (tmp_path / "o").exists()


def test_bad_times(tmp_path: Path) -> None:
    no_time = write_raw(tmp_path / "a" / "ratings.csv", "userId,movieId,rating\n1,2,4\n")
    with pytest.raises(DataError, match="time column 'timestamp'") as err:
        prepare("movielens", no_time, tmp_path / "o", split="temporal")
    assert err.value.path == str(no_time)
    bad = write_raw(
        tmp_path / "b" / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,2,4,100\n1,3,4,soon\n2,2,1,\n3,3,3,200\n",
    )
    with pytest.raises(DataError, match="not a number") as err:
        prepare("movielens", bad, tmp_path / "o", split="temporal")
    assert err.value.line == 3 and err.value.column == "timestamp"
    r: Any = prepare(
        "movielens", bad, tmp_path / "o", split="temporal:1:0:1", on_bad_row="skip", min_count=1
    )
    assert r.bad_rows["total"] == 2 and r.splits == {"train": 1, "valid": 0, "test": 1}
    assert r.bad_rows["reasons"] == {"not a number": 1, "missing time": 1}
    schema = write_raw(tmp_path / "s.yaml", "label: y\ncategorical: [a]\ntime: y\n")
    with pytest.raises(DataError, match="'time' must name one column"):
        prepare("csv", no_time, tmp_path / "o2", schema=schema, split="temporal")
