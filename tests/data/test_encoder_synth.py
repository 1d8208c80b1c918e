"""RowEncoder (same ids as prepare), the embedded default, and synthetic Criteo."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from autoloss.cli import main
from autoloss.data.encoder import RowEncoder
from autoloss.data.prepare import prepare
from autoloss.data.store import EncodedDataset
from autoloss.data.synth import write_synthetic_criteo, write_synthetic_criteo_files

from .conftest import write_raw


def all_rows(ds: EncodedDataset) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([ds.split(s).x for s in ("train", "valid", "test")])
    y = np.concatenate([ds.split(s).y for s in ("train", "valid", "test")])
    return x, y


def test_row_encoder_matches_prepare_criteo(criteo_file: Path, tmp_path: Path) -> None:
    r = prepare("criteo", criteo_file, tmp_path / "out", min_count=3, split="1:0:0")
    enc = RowEncoder(r.path).encode_file(criteo_file)
    x, y = all_rows(EncodedDataset(r.path))
    assert np.array_equal(enc.x, x) and np.array_equal(enc.y, y)
    assert (enc.x == 0).any()  # rare values went to OOV in both
    # Without the label column, and with unseen values -> 0.
    unlabeled = tmp_path / "new.txt"
    lines = criteo_file.read_text().splitlines()[:5]
    unlabeled.write_text("".join(line.split("\t", 1)[1] + "\n" for line in lines))
    enc2 = RowEncoder(r.path).encode_file(unlabeled)
    assert enc2.y is None and np.array_equal(enc2.x, x[:5])
    assert tuple(enc2.batch().x.shape) == (5, 39)


def test_row_encoder_matches_prepare_csv(csv_files: tuple[Path, Path], tmp_path: Path) -> None:
    data, schema = csv_files
    r = prepare("csv", data, tmp_path / "out", schema=schema, split="1:0:0")
    ds = EncodedDataset(r.path)
    enc = RowEncoder(r.path).encode_file(data)
    tr = ds.split("train")
    assert np.array_equal(enc.x, tr.x) and np.allclose(enc.dense, tr.dense, atol=1e-6)
    assert np.array_equal(enc.bags, tr.bags)
    unseen = write_raw(
        tmp_path / "u.csv", "user,item,count,price,score,views,tags\nzz,i1,5,1e9,0,3,t1|new|t2\n"
    )
    e = RowEncoder(r.path).encode_file(unseen)
    assert e.x[0, 0] == 0 and e.y is None and e.x[0, 3] == 4  # price above every edge: last bucket
    tags = ds.vocab("tags")["values"]
    assert [tags[i - 1] if i > 0 else "<oov>" for i in e.bags[0, 0] if i != -1] == [
        "t1",
        "<oov>",
        "t2",
    ]


def test_row_encoder_matches_prepare_movielens(movielens_dir: Path, tmp_path: Path) -> None:
    r = prepare("movielens", movielens_dir / "ratings.csv", tmp_path / "out", seed=7)
    ds = EncodedDataset(r.path)
    enc = RowEncoder(r.path).encode_file(movielens_dir / "ratings.csv")
    from autoloss.data.prepare import split_of_rows

    s = split_of_rows(0, 400, 7, (8, 1, 1))
    for i, name in enumerate(("train", "valid", "test")):
        assert np.array_equal(enc.x[s == i], ds.split(name).x)
        assert np.array_equal(enc.bags[s == i], ds.split(name).bags)


def test_embedded_default_and_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from autoloss.data.embedded import EMBEDDED_DIR, default_dataset

    assert {"README.txt", "CITATION.txt", "ratings.csv.gz", "movies.csv.gz"} <= {
        p.name for p in EMBEDDED_DIR.iterdir()
    }
    assert "Harper" in (EMBEDDED_DIR / "CITATION.txt").read_text()
    monkeypatch.setenv("AUTOLOSS_HOME", str(tmp_path / "home"))
    path = default_dataset()
    assert path == tmp_path / "home" / "datasets" / "ml-latest-small-binary"
    ds = EncodedDataset(path)
    assert sum(ds.meta["splits"].values()) == 100_836 and ds.meta["protocol"]["seed"] == 2021
    assert abs(ds.meta["positive_rate"]["train"] - 0.482) < 0.01
    mtime = (path / "meta.json").stat().st_mtime
    assert default_dataset() == path and (path / "meta.json").stat().st_mtime == mtime  # cached
    assert main(["prepare", "--out", str(tmp_path / "cli"), "--task", "multiclass"]) == 0
    assert "train 8" in capsys.readouterr().out
    assert EncodedDataset(tmp_path / "cli").meta["num_classes"] == 5


def test_synth_layout_and_signal(tmp_path: Path) -> None:
    path = write_synthetic_criteo(tmp_path / "s.txt.gz", 20_000, seed=1)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert len(lines) == 20_000
    cols = [line.split("\t") for line in lines]
    assert {len(c) for c in cols} == {40}
    labels = np.array([int(c[0]) for c in cols])
    assert 0.15 < labels.mean() < 0.35
    ints = [c[1:14] for c in cols]
    assert any(v == "" for row in ints for v in row) and any(
        v.startswith("-") for row in ints for v in row
    )
    cats = [v for c in cols for v in c[14:] if v]
    assert all(len(v) == 8 and int(v, 16) >= 0 for v in cats[:5000])
    assert any(c[35] == "" for c in cols)  # C22 is often empty
    a = write_synthetic_criteo(tmp_path / "a.txt", 2000, seed=1).read_text()
    assert write_synthetic_criteo(tmp_path / "b.txt", 2000, seed=1).read_text() == a
    assert write_synthetic_criteo(tmp_path / "c.txt", 2000, seed=2).read_text() != a


def test_synth_signal_is_learnable(tmp_path: Path) -> None:
    """Per-value smoothed log-odds of a few fields (a naive-Bayes score) beat chance clearly,
    and the C2 x C5 pair carries signal beyond its two fields (the planted interaction)."""
    from sklearn.metrics import roc_auc_score

    path = write_synthetic_criteo(tmp_path / "s.txt", 60_000, seed=2)
    ds = EncodedDataset(prepare("criteo", path, tmp_path / "ds", min_count=5).path)
    tr, te = ds.split("train"), ds.split("test")
    names = ds.spec.cat_names
    prior = tr.y.mean()

    def logodds(key_tr: np.ndarray, key_te: np.ndarray) -> np.ndarray:
        n = np.bincount(key_tr, minlength=key_te.max() + 1)[key_te]
        pos = np.bincount(key_tr, weights=tr.y, minlength=key_te.max() + 1)[key_te]
        p = (pos + 20 * prior) / (n + 20)
        return np.log(p / (1 - p))

    def col(split, name: str) -> np.ndarray:  # type: ignore[no-untyped-def]
        return np.asarray(split.x[:, names.index(name)]).astype(np.int64)

    score = sum(logodds(col(tr, f), col(te, f)) for f in ("C1", "C2", "C3", "C5", "C6", "C9"))
    assert roc_auc_score(te.y, score) > 0.65
    pair_tr = col(tr, "C2") * 10_000 + col(tr, "C5")
    pair_te = col(te, "C2") * 10_000 + col(te, "C5")
    _, inv = np.unique(np.concatenate([pair_tr, pair_te]), return_inverse=True)
    pair = roc_auc_score(te.y, logodds(inv[: pair_tr.size], inv[pair_tr.size :]))
    single = roc_auc_score(
        te.y, logodds(col(tr, "C2"), col(te, "C2")) + logodds(col(tr, "C5"), col(te, "C5"))
    )
    assert pair > single


def test_synth_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "criteo", "--rows", "500", "--out", str(tmp_path / "c.txt")]) == 0
    assert len((tmp_path / "c.txt").read_text().splitlines()) == 500
    assert main(["synth", "criteo", "--rows", "0", "--out", str(tmp_path / "d.txt")]) == 2


def test_synth_criteo_files_like_criteo_1tb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--files N``: N gzip files day_0.gz ... in Criteo's exact layout, which together, in
    order, hold the rows of the one file of the same --rows and --seed (a generated chunk cut
    between two files); deterministic for a seed; bad counts are one line."""
    import autoloss.data.synth as synth

    monkeypatch.setattr(synth, "CHUNK_ROWS", 700)  # several generated chunks, cut across files
    out = tmp_path / "days"
    argv = ["synth", "criteo", "--rows", "3001", "--out", str(out), "--seed", "4"]
    assert main([*argv, "--files", "3"]) == 0
    assert "3 files day_0.gz ... day_2.gz" in capsys.readouterr().out
    days = [out / f"day_{i}.gz" for i in range(3)]
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in days]
    texts = [gzip.decompress(p.read_bytes()).decode() for p in days]
    assert [t.count("\n") for t in texts] == [1001, 1000, 1000]
    assert all({line.count("\t") for line in t.splitlines()} == {39} for t in texts)
    assert "".join(texts) == write_synthetic_criteo(tmp_path / "one.txt", 3001, seed=4).read_text()
    again = write_synthetic_criteo_files(tmp_path / "again", 3001, 3, seed=4)
    assert [gzip.decompress(p.read_bytes()).decode() for p in again] == texts
    for bad, needle in ((["--files", "0"], "--files must be in 1..--rows"),
                        (["--files", "3002"], "--files must be in 1..--rows")):  # fmt: skip
        assert main([*argv[:4], "--out", str(tmp_path / "x"), *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err
    (tmp_path / "file").write_text("")
    assert (
        main(["synth", "criteo", "--rows", "9", "--out", str(tmp_path / "file"), "--files", "2"])
        == 2
    )
    assert "is a file" in capsys.readouterr().err
