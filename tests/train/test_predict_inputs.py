"""``predict`` (and ``export``) on hostile raw rows and unusable ``--out`` paths: a prediction
file, or one clean line on stderr and exit 2; labels are neither required nor checked."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoloss.cli import main
from autoloss.errors import AutolossError, ConfigError, DataError
from autoloss.train.serving import predict_file

CRITEO_ROW = "\t".join(["1"] * 13 + ["ab"] * 26)  # no label: 39 columns
RATINGS_HEADER = "userId,movieId,rating,timestamp"


def _train(root: Path, fmt: str, raw: Path) -> Path:
    data, run = root / f"{fmt}-data", root / f"{fmt}-run"
    assert main(["prepare", "--format", fmt, "--input", str(raw), "--out", str(data)]) == 0
    args = ["train", "--data", str(data), "--model", "lr", "--loss", "ce", "--epochs", "1"]
    assert main([*args, "--out", str(run), "--progress", "off", "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    criteo = root / "train.txt"
    criteo.write_text(
        "".join(
            f"{int(rng.random() < 0.3)}\t"
            + "\t".join(str(int(v)) for v in rng.integers(0, 5, 13))
            + "\t"
            + "\t".join(f"t{int(v)}" for v in rng.integers(0, 3, 26))
            + "\n"
            for _ in range(300)
        )
    )
    ml = root / "ml"
    ml.mkdir()
    (ml / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,Heat (1995),Action\n"
    )
    (ml / "ratings.csv").write_text(
        RATINGS_HEADER
        + "\n"
        + "".join(
            f"{int(u)},{int(m)},{r},0\n"
            for u, m, r in zip(
                rng.integers(1, 10, 300), rng.integers(1, 3, 300), rng.choice([1.0, 4.5], 300)
            )
        )
    )
    return {
        "criteo": _train(root, "criteo", criteo),
        "movielens": _train(root, "movielens", ml / "ratings.csv"),
    }


def _one_line_exit_2(capfd: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capfd.readouterr()
    rc = main(argv)
    err = capfd.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"autoloss {argv[0]}: error: ") and err[:-1].isprintable(), err
    return err


# --- case 1: --out --------------------------------------------------------------------------------
def test_case1_predict_out_is_a_directory(
    runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "new.txt"
    raw.write_text(CRITEO_ROW + "\n")
    out = tmp_path / "scores"
    out.mkdir()
    err = _one_line_exit_2(
        capfd, ["predict", "--run", str(runs["criteo"]), "--input", str(raw), "--out", str(out)]
    )
    assert f"{out} (column --out): is a directory: give a file name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "scores"]
    assert list(out.iterdir()) == []


def test_case1_predict_out_under_a_file_or_onto_its_input(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    raw = tmp_path / "new.txt"
    raw.write_text(CRITEO_ROW + "\n")
    with pytest.raises(ConfigError, match="new.txt is a file, not a directory"):
        predict_file(runs["criteo"], raw, raw / "scores.csv")
    with pytest.raises(ConfigError, match="is the input file"):
        predict_file(runs["criteo"], raw, raw)


def test_case1_export_out_is_a_directory(
    runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    argv = ["export", "--run", str(runs["criteo"]), "--format", "torchscript"]
    err = _one_line_exit_2(capfd, [*argv, "--out", str(tmp_path)])
    assert "is a directory" in err and list(tmp_path.iterdir()) == []


def test_predict_writes_atomically(runs: dict[str, Path], tmp_path: Path) -> None:
    raw = tmp_path / "new.txt"
    raw.write_text((CRITEO_ROW + "\n") * 3)
    out = tmp_path / "deep" / "er" / "scores.csv"
    assert predict_file(runs["criteo"], raw, out) == 3
    assert out.read_text().splitlines()[0] == "prob"
    assert [p.name for p in out.parent.iterdir()] == ["scores.csv"]


# --- case 2: random bytes ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["criteo", "movielens"])
def test_case2_predict_random_bytes(
    runs: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str], fmt: str
) -> None:
    raw = tmp_path / "new.txt"
    raw.write_bytes(bytes(np.random.default_rng(5).integers(0, 256, 5000, dtype=np.uint8)))
    out = tmp_path / "scores.csv"
    with _no_unraisable():
        err = _one_line_exit_2(
            capfd, ["predict", "--run", str(runs[fmt]), "--input", str(raw), "--out", str(out)]
        )
    assert str(raw) in err and "\ufffd" not in err and "Exception ignored" not in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["new.txt"]


# --- case 3: messages and labels ----------------------------------------------------------------------
def test_case3_criteo_predict_column_counts(runs: dict[str, Path], tmp_path: Path) -> None:
    raw = tmp_path / "new.txt"
    raw.write_text("\t".join(["1"] * 13 + ["ab"] * 22) + "\n")  # 35 columns
    with pytest.raises(DataError) as err:
        predict_file(runs["criteo"], raw, tmp_path / "p.csv")
    assert err.value.line == 1
    assert (
        err.value.message
        == "wrong number of columns: expected 39 (without a label) or 40, found 35"
    )
    raw.write_text(CRITEO_ROW + "\n" + "0\t" + CRITEO_ROW + "\n")  # 39, then 40
    with pytest.raises(DataError) as err:
        predict_file(runs["criteo"], raw, tmp_path / "p.csv")
    assert err.value.line == 2
    assert err.value.message == (
        "wrong number of columns: expected 39 (as on the first line, without a label), found 40"
    )


def test_case3_predict_ignores_labels(runs: dict[str, Path], tmp_path: Path) -> None:
    """MovieLens rows whose rating is empty, out of range or not a number score like rows
    without a rating column: predict neither needs nor checks the label."""
    rows = ["1,1", "2,2", "999,1"]
    bare = tmp_path / "bare.csv"
    bare.write_text("userId,movieId\n" + "\n".join(rows) + "\n")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text(
        RATINGS_HEADER
        + "\n"
        + "\n".join(f"{r},{x},7" for r, x in zip(rows, ["", "9", "abc"]))
        + "\n"
    )
    predict_file(runs["movielens"], bare, tmp_path / "a.csv")
    predict_file(runs["movielens"], labelled, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    crit = tmp_path / "c.txt"
    crit.write_text("7\t" + CRITEO_ROW + "\n")  # a label that is not 0/1
    assert predict_file(runs["criteo"], crit, tmp_path / "c.csv") == 1


# --- property: hostile raw rows --------------------------------------------------------------------------
@contextlib.contextmanager
def _no_unraisable() -> Iterator[None]:
    seen: list[Any] = []
    saved = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield
    finally:
        sys.unraisablehook = saved
    assert not seen, [str(u.exc_value) for u in seen]


HOSTILE = [b"", b"nan", b"1e309", b"9" * 30, b"\x00", b"\xff", b"\xc3", b'"', b"\r", b"-1", b"x"]
value = st.one_of(st.sampled_from(HOSTILE), st.binary(max_size=5), st.sampled_from([b"1", b"ab"]))


@st.composite
def raw_rows(draw: st.DrawFn, fmt: str) -> bytes:
    if fmt == "criteo":
        width = draw(st.sampled_from([39, 40, 39, 35, 41, 1]))
        sep, head = b"\t", []
    else:
        width = draw(st.sampled_from([2, 4, 3]))
        sep = b","
        head = [draw(st.sampled_from([b"userId,movieId", RATINGS_HEADER.encode(), b"a,b"]))]
    lines = draw(
        st.lists(
            st.one_of(
                st.lists(value, min_size=width, max_size=width).map(sep.join),
                st.lists(st.sampled_from([b"1", b"2"]), min_size=width, max_size=width).map(
                    sep.join
                ),
                st.binary(max_size=20),
            ),
            max_size=6,
        )
    )
    return b"\n".join(head + lines) + b"\n"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), fmt=st.sampled_from(["criteo", "movielens"]))
def test_hostile_predict_rows(
    runs: dict[str, Path], capfd: pytest.CaptureFixture[str], data: st.DataObject, fmt: str
) -> None:
    raw_bytes = data.draw(raw_rows(fmt))
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "new.txt", Path(d) / "scores.csv"
        raw.write_bytes(raw_bytes)
        capfd.readouterr()
        with _no_unraisable(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                n = predict_file(runs[fmt], raw, out)
                assert len(out.read_text().splitlines()) == n + 1
            except AutolossError as exc:
                text = str(exc)
                assert "\n" not in text and "\r" not in text and text.isprintable(), text
                assert str(raw) in text or str(out) in text, text
                assert "\ufffd" not in text, text
                assert not out.exists()
        assert not caught, [str(w.message) for w in caught]
        assert capfd.readouterr().err == ""
        assert sorted(p.name for p in Path(d).iterdir()) in (["new.txt"], ["new.txt", "scores.csv"])
