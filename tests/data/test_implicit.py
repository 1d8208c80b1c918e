"""MovieLens as implicit feedback with natural noise (``prepare --task implicit``, the ADT
protocol): positives, sampled negatives, noisy positives, their split, the dataset and runs."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from autoloss.cli import main
from autoloss.data.conditions import Conditions, apply_conditions
from autoloss.data.formats import MovieLensFormat
from autoloss.data.implicit import ImplicitOptions, build_implicit
from autoloss.data.negatives import sample_negatives
from autoloss.data.parse_pass import PassInput, PassOptions
from autoloss.data.prepare import prepare
from autoloss.data.readers import BadRows, read_head
from autoloss.data.splits import split_of_rows, time_cuts
from autoloss.data.store import SPLITS, EncodedDataset
from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run

from .conftest import write_raw

MOVIES = 40
GENRES = ("Drama", "Comedy", "Action", "Horror", "Sci-Fi")
GREEDY, COMPLETE = 900, 901  # rates all movies but one; rates every movie


def implicit_ratings(users: int = 60, seed: int = 0) -> list[tuple[int, int, float, int]]:
    """(user, movie, rating, timestamp) rows: distinct pairs and distinct times; user GREEDY
    leaves one movie unrated (its negatives must repeat it), COMPLETE rates every movie."""
    rng = np.random.default_rng(seed)
    pairs = []
    for u in range(1, users + 1):
        for m in rng.choice(np.arange(1, MOVIES + 1), int(rng.integers(3, 16)), replace=False):
            pairs.append((u, int(m)))
    pairs += [(GREEDY, m) for m in range(2, MOVIES + 1)] + [(COMPLETE, m) for m in range(1, 41)]
    stars = rng.choice(np.arange(1, 11) / 2, len(pairs))
    times = 10**9 + rng.permutation(len(pairs)) * 60
    return [(u, m, float(r), int(t)) for (u, m), r, t in zip(pairs, stars, times)]


def movies_csv() -> str:
    lines = ["movieId,title,genres"]
    for m in range(1, MOVIES + 1):
        lines.append(f"{m},Film {m} ({1980 + m % 7}),{GENRES[m % 5]}|{GENRES[(m + 2) % 5]}")
    return "\n".join(lines) + "\n"


@pytest.fixture
def ratings(tmp_path: Path) -> tuple[Path, list[tuple[int, int, float, int]]]:
    rows = implicit_ratings()
    text = "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{r},{t}\n" for u, m, r, t in rows
    )
    path = write_raw(tmp_path / "ml" / "ratings.csv", text)
    write_raw(tmp_path / "ml" / "movies.csv", movies_csv())
    return path, rows


def implicit_tables(
    path: Path, root: Path, *, seed: int = 2021, negatives: int = 2, temporal: bool = False
) -> tuple[Any, dict[str, list[tuple[int, int, int]]]]:
    """The pre-pass alone: its result and each split's rows (user, movie, label) in order."""
    fmt = MovieLensFormat("binary")
    if temporal:
        fmt.enable_time()
    names, _ = read_head(path, fmt.layout(path))
    inp = PassInput(fmt.bind_input(path, names, need_label=True), None)
    opts = PassOptions((8.0, 1.0, 1.0), seed, False, 64)
    built = build_implicit(fmt, [inp], root, opts, ImplicitOptions(negatives), BadRows())
    tables = {}
    for name in SPLITS:
        t = pq.read_table(root / f"{name}.parquet").to_pydict()
        tables[name] = [
            (int(u), int(m), int(y)) for u, m, y in zip(t["userId"], t["movieId"], t["label"])
        ]
    return built, tables


def expected_splits(rows: list[tuple[int, int, float, int]], temporal: bool) -> np.ndarray:
    """Each rating's split, computed here from the protocol's definition."""
    if temporal:
        times = np.array([t for *_, t in rows], dtype=np.float64)
        return time_cuts(times, (8.0, 1.0, 1.0)).of_times(times)
    return split_of_rows(0, len(rows), 2021, (8.0, 1.0, 1.0))


def grouped(table: list[tuple[int, int, int]]) -> list[tuple[tuple[int, int], list[int]]]:
    """(positive (user, movie), its negatives' movies): each positive is followed by its own."""
    groups: list[tuple[tuple[int, int], list[int]]] = []
    for u, m, y in table:
        if y == 1:
            groups.append(((u, m), []))
        else:
            assert groups and groups[-1][0][0] == u, "a negative must follow its positive"
            groups[-1][1].append(m)
    return groups


@pytest.mark.parametrize("temporal", [False, True], ids=["hash", "temporal"])
def test_positives_negatives_and_noisy_positives(
    ratings: tuple[Path, list[tuple[int, int, float, int]]], tmp_path: Path, temporal: bool
) -> None:
    path, rows = ratings
    built, tables = implicit_tables(path, tmp_path / "imp", temporal=temporal)
    split = expected_splits(rows, temporal)
    rated: dict[int, set[int]] = defaultdict(set)
    for u, m, _, _ in rows:
        rated[u].add(m)
    noisy = {(u, m) for u, m, r, _ in rows if r < 4}
    where = {(u, m): s for (u, m, _, _), s in zip(rows, split)}
    seen_positives: dict[str, list[tuple[int, int]]] = {}
    negatives_of_user: dict[int, list[int]] = defaultdict(list)
    for s, name in enumerate(SPLITS):
        groups = grouped(tables[name])
        seen_positives[name] = [p for p, _ in groups]
        for (u, m), negs in groups:
            assert where[(u, m)] == s  # the positive's split; its negatives follow it
            assert all(n not in rated[u] for n in negs)  # never rated by the user
            if u != COMPLETE:
                assert len(negs) == 2
            negatives_of_user[u] += negs
    # every rated pair is a positive once, in its split, except the test's noisy ones
    all_positives = Counter(p for ps in seen_positives.values() for p in ps)
    assert set(all_positives.values()) == {1}
    expected = {(u, m) for (u, m, _, _), s in zip(rows, split) if not (s == 2 and (u, m) in noisy)}
    assert set(all_positives) == expected
    # noisy positives: in train and valid, none in test
    assert not noisy & set(seen_positives["test"])
    assert noisy & set(seen_positives["train"]) and noisy & set(seen_positives["valid"])
    assert any(s == 2 and p in noisy for p, s in where.items())  # some were removed
    # a user's negatives are distinct while unrated movies remain; else spread evenly
    repeating = 0
    for u, negs in negatives_of_user.items():
        need, free = 2 * len(rated[u]), MOVIES - len(rated[u])
        if free == 0:
            assert u == COMPLETE and negs == []
        elif need <= free:
            assert len(set(negs)) == len(negs)
        else:
            assert max(Counter(negs).values()) <= -(-need // free)
            repeating += 1
    assert set(negatives_of_user[GREEDY]) == {1}
    imp = built.protocol
    assert imp["users_without_unrated_movies"] == 1
    assert imp["users_with_repeated_negatives"] == repeating > 1
    for name in SPLITS:
        assert imp["positives"][name] == len(seen_positives[name])
        assert imp["noisy_positives"][name] == len(noisy & set(seen_positives[name]))
    assert imp["noisy_positives"]["test"] == 0
    # the valid flags: the rows of noisy positives (the positive and its negatives)
    flags = [(u, m) in noisy for (u, m), negs in grouped(tables["valid"]) for _ in [0, *negs]]
    assert built.noisy_valid.tolist() == flags


def test_negative_sampling_is_seeded_and_uniform() -> None:
    rng = np.random.default_rng(0)
    users = rng.integers(0, 2000, 4000)
    items = rng.integers(0, 50, 4000)

    def draw(seed: int) -> np.ndarray:
        return sample_negatives(users, items, 50, 3, np.random.default_rng(seed)).items

    a, b, c = draw(1), draw(1), draw(2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    for u in range(0, 2000, 7):
        mine = a[users == u].ravel()
        assert not set(mine) & set(items[users == u].tolist())
        assert len(set(mine.tolist())) == mine.size  # without replacement
    # uniform over the unrated items: every item drawn about equally often
    counts = np.bincount(a.ravel(), minlength=50)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def prepared(ratings_path: Path, out: Path, **kw: Any) -> EncodedDataset:
    prepare("movielens", ratings_path, out, task="implicit", min_count=1, **kw)
    return EncodedDataset(out)


def test_prepared_dataset(
    ratings: tuple[Path, list[tuple[int, int, float, int]]], tmp_path: Path
) -> None:
    path, rows = ratings
    ds = prepared(path, tmp_path / "out", chunk_rows=50)
    meta = ds.meta
    assert meta["task"] == "binary" and meta["num_classes"] == 2  # an ordinary binary dataset
    protocol = meta["protocol"]
    imp = protocol["implicit"]
    assert protocol["task"] == "implicit" and protocol["seed"] == 2021
    assert (imp["negatives_per_positive"], imp["clean_rating"], imp["seed"]) == (2, 4.0, 2021)
    assert imp["ratings"] == len(rows)
    for name in SPLITS:
        y = np.asarray(ds.split(name).y)
        assert int(y.sum()) == imp["positives"][name]
        assert int((y == 0).sum()) == imp["negatives"][name] == meta["splits"][name] - y.sum()
    noisy = ds.noisy_rows("valid")
    assert noisy is not None and noisy.dtype == bool and len(noisy) == meta["splits"]["valid"]
    y_valid = np.asarray(ds.split("valid").y)
    assert int((noisy & (y_valid == 1)).sum()) == imp["noisy_positives"]["valid"] > 0
    assert ds.noisy_rows("train") is None and ds.noisy_rows("test") is None
    # negatives carry their movie's features (year and genres from movies.csv)
    movie_vocab = ds.vocab("movieId")["values"]
    genre_vocab = ds.vocab("genres")["values"]
    names = [f["name"] for f in meta["fields"] if f["kind"] == "categorical"]
    train = ds.split("train")
    checked = 0
    for x, bag, y in zip(train.x, train.bags[:, 0], train.y):
        if y == 0 and x[names.index("movieId")] > 0:
            m = int(movie_vocab[x[names.index("movieId")] - 1])
            genres = {genre_vocab[i - 1] for i in bag if i > 0}
            assert genres == {GENRES[m % 5], GENRES[(m + 2) % 5]}
            checked += 1
    assert checked > 100
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # build dir removed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "meta.json",
        "side",
        "test",
        "train",
        "valid",
        "vocab",
    ]


def _arrays(ds: EncodedDataset) -> dict[str, bytes]:
    out = {}
    for name in SPLITS:
        s = ds.split(name)
        out[name] = np.asarray(s.x).tobytes() + np.asarray(s.y).tobytes()
    return out


def test_seeded_and_independent_of_chunk_rows(
    ratings: tuple[Path, list[tuple[int, int, float, int]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("autoloss.data.readers._BLOCK", 256)  # small blocks: real chunks
    path, _ = ratings
    a = prepared(path, tmp_path / "a", chunk_rows=37)
    b = prepared(path, tmp_path / "b", chunk_rows=100_000)
    c = prepared(path, tmp_path / "c", seed=7)
    assert _arrays(a) == _arrays(b)
    assert a.meta["protocol"]["implicit"] == b.meta["protocol"]["implicit"]
    assert _arrays(a) != _arrays(c)
    assert a.meta["splits"] != c.meta["splits"]  # another seed, another split as well


def test_options(ratings: tuple[Path, list[tuple[int, int, float, int]]], tmp_path: Path) -> None:
    path, rows = ratings
    ds = prepared(path, tmp_path / "o", negatives=3, clean_rating=2.5)
    imp = ds.meta["protocol"]["implicit"]
    assert imp["negatives_per_positive"] == 3 and imp["clean_rating"] == 2.5
    y = np.asarray(ds.split("train").y)
    assert imp["negatives"]["train"] >= 3 * (imp["positives"]["train"] - 40)  # COMPLETE: none
    split = expected_splits(rows, False)
    assert imp["removed_from_test"]["noisy_positives"] == sum(
        1 for (_, _, r, _), s in zip(rows, split) if s == 2 and r < 2.5
    )
    assert int(y.sum()) == imp["positives"]["train"]


def small_cfg(data: Path, **over: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    cfg.model.name = "deepfm"
    cfg.model.embed_dim = 4
    cfg.model.mlp = [8]
    cfg.loss.method = "ce"
    cfg.optim.batch_size = 256
    cfg.train.epochs = 1
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    cfg.train.num_threads = 1
    for k, v in over.items():
        cfg.set(k, v)
    return cfg


def test_noise_on_valid_false_drops_the_noisy_valid_rows(
    ratings: tuple[Path, list[tuple[int, int, float, int]]], tmp_path: Path
) -> None:
    path, _ = ratings
    ds = prepared(path, tmp_path / "ds")
    noisy = ds.noisy_rows("valid")
    assert noisy is not None
    y = np.asarray(ds.split("valid").y)
    clean = apply_conditions(ds, Conditions(noise_on_valid=False), seed=0)
    assert np.array_equal(np.asarray(clean.split("valid").y), y[~noisy])
    assert np.array_equal(
        np.asarray(clean.split("valid").x), np.asarray(ds.split("valid").x)[~noisy]
    )
    assert clean.split("train") is ds.split("train") and clean.split("test") is ds.split("test")
    assert apply_conditions(ds, Conditions(), seed=0) is ds  # noise on valid: as prepared

    _, result = train_run(
        small_cfg(tmp_path / "ds", out=str(tmp_path / "run"), **{"data.noise_on_valid": "false"}),
        log=lambda s: None,
    )
    summary = result["conditions"]
    dropped = summary["noisy_dropped"]["valid"]
    assert dropped == {"rows": int(noisy.sum()), "positives": int((noisy & (y == 1)).sum())}
    assert dropped["positives"] == ds.meta["protocol"]["implicit"]["noisy_positives"]["valid"]
    assert summary["rows"]["valid"] == len(y) - dropped["rows"]
    assert summary["original_rows"]["valid"] == len(y)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["conditions"]["noisy_dropped"] == summary["noisy_dropped"]


def test_pos_rate_after_the_clean_valid(
    ratings: tuple[Path, list[tuple[int, int, float, int]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("autoloss.data.conditions.MIN_TEST_POSITIVES", 1)  # a small test split
    path, _ = ratings
    ds = prepared(path, tmp_path / "ds")
    both = apply_conditions(ds, Conditions(noise_on_valid=False, pos_rate=0.2), seed=0)
    valid = both.split("valid")
    noisy = ds.noisy_rows("valid")
    assert noisy is not None
    clean_x = np.asarray(ds.split("valid").x)[~noisy]
    kept = {r.tobytes() for r in clean_x}
    assert all(r.tobytes() in kept for r in np.asarray(valid.x))  # a subset of the clean rows
    assert abs(float(np.mean(np.asarray(valid.y))) - 0.2) < 0.02


CLI_ERRORS = {
    "negatives-without-implicit": (["--format", "movielens", "--negatives", "3"], "--negatives"),
    "clean-without-implicit": (
        ["--format", "movielens", "--task", "binary", "--clean-rating", "3"],
        "--clean-rating",
    ),
    "implicit-criteo": (["--format", "criteo", "--task", "implicit"], "--format movielens"),
    "negatives-zero": (["--format", "movielens", "--task", "implicit", "--negatives", "0"], ">= 1"),
    "clean-too-high": (
        ["--format", "movielens", "--task", "implicit", "--clean-rating", "6"],
        "(0, 5]",
    ),
    "pre-split": (
        ["--format", "movielens", "--task", "implicit", "--valid", "V", "--test", "T"],
        "--valid",
    ),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_cli_user_errors(
    ratings: tuple[Path, list[tuple[int, int, float, int]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    path, _ = ratings
    args, needle = CLI_ERRORS[case]
    rc = main(["prepare", *args, "--input", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("autoloss prepare: error:") and needle in err
    assert not (tmp_path / "o").exists()


def test_options_checked_in_python() -> None:
    with pytest.raises(ConfigError, match="--negatives"):
        ImplicitOptions(negatives=0)
    with pytest.raises(ConfigError, match="--clean-rating"):
        ImplicitOptions(clean_rating=0)


def test_cli_summary(
    ratings: tuple[Path, list[tuple[int, int, float, int]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _ = ratings
    argv = ["prepare", "--format", "movielens", "--task", "implicit", "--input", str(path)]
    rc = main([*argv, "--out", str(tmp_path / "o"), "--negatives", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "implicit: positives train" in out and "(1 per positive)" in out
    assert "removed from test" in out
