"""Bad input: clear errors naming file/line/column, skip mode, atomicity, existing targets."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

import autoloss.data.finalize as finalize
from autoloss.cli import main
from autoloss.data.prepare import prepare
from autoloss.errors import ConfigError, DataError, SchemaError

from .conftest import FRAPPE_HEADER, criteo_line, criteo_text, write_raw

GOOD = criteo_line(0, ["1"] * 13, ["ab"] * 26)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


BAD_CRITEO = {
    "columns": (
        criteo_line(1, ["1"] * 13, ["ab"] * 25),
        r"wrong number of columns: expected 40, found 39",
        None,
    ),
    "integer": (
        criteo_line(0, ["1"] * 5 + ["x7"] + ["1"] * 7, ["ab"] * 26),
        r"not an integer: 'x7'",
        "I6",
    ),
    "label": (criteo_line(2, ["1"] * 13, ["ab"] * 26), r"label is not 0 or 1", "label"),
    "label-text": (criteo_line("yes", ["1"] * 13, ["ab"] * 26), r"not a number", "label"),
}


@pytest.mark.parametrize("case", sorted(BAD_CRITEO))
def test_bad_criteo_rows_name_file_line_column(tmp_path: Path, case: str) -> None:
    bad, message, column = BAD_CRITEO[case]
    path = write_raw(tmp_path / "t.txt", GOOD * 3 + bad + GOOD)
    with pytest.raises(DataError, match=message) as err:
        prepare("criteo", path, tmp_path / "out")
    assert err.value.path == str(path) and err.value.line == 4 and err.value.column == column
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_undecodable_bytes(tmp_path: Path) -> None:
    bad = criteo_line(0, ["1"] * 13, ["ab"] * 25).encode()[:-1] + b"\t\xff\xfe\n"
    path = write_raw(tmp_path / "t.txt", GOOD.encode() + bad)
    with pytest.raises(DataError, match="undecodable") as err:
        prepare("criteo", path, tmp_path / "out")
    assert err.value.line == 2 and err.value.column == "C26"


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        prepare("criteo", tmp_path / "nope.txt", tmp_path / "out")
    empty = write_raw(tmp_path / "empty.txt", "")
    with pytest.raises(DataError, match="empty file"):
        prepare("criteo", empty, tmp_path / "out")
    empty_gz = tmp_path / "empty.csv.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="empty file"):
        prepare("frappe", empty_gz, tmp_path / "out")
    header_only = write_raw(tmp_path / "h.csv", FRAPPE_HEADER + "\n")
    with pytest.raises(DataError, match="no data rows"):
        prepare("frappe", header_only, tmp_path / "out")


def test_schema_naming_absent_column(tmp_path: Path) -> None:
    data = write_raw(tmp_path / "d.csv", "y,a\n0,x\n")
    schema = write_raw(tmp_path / "s.yaml", "label: y\ncategorical: [a, b]\n")
    with pytest.raises(SchemaError, match="column 'b' is absent") as err:
        prepare("csv", data, tmp_path / "out", schema=schema)
    assert err.value.path == str(data) and err.value.column == "b"


def test_multiclass_label_out_of_range(tmp_path: Path) -> None:
    data = write_raw(tmp_path / "d.csv", "y,a\n0,x\n3,y\n")
    schema = write_raw(
        tmp_path / "s.yaml", "label: y\ntask: multiclass\nnum_classes: 3\ncategorical: [a]\n"
    )
    with pytest.raises(DataError, match=r"not a class in 0\.\.2") as err:
        prepare("csv", data, tmp_path / "out", schema=schema)
    assert err.value.line == 3


def test_movielens_bad_rating(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4.0,0\n1,3,7.5,0\n"
    )
    with pytest.raises(DataError, match=r"rating is not in \(0, 5\]") as err:
        prepare("movielens", path, tmp_path / "out")
    assert err.value.line == 3


def test_skip_mode_counts_reasons(tmp_path: Path) -> None:
    rows = [GOOD] * 20 + [b for b, _, _ in BAD_CRITEO.values()] + [BAD_CRITEO["integer"][0]]
    path = write_raw(tmp_path / "t.txt", "".join(rows))
    r = prepare("criteo", path, tmp_path / "out", on_bad_row="skip", min_count=1)
    assert sum(r.splits.values()) == 20
    assert r.bad_rows["total"] == 5
    reasons = r.bad_rows["reasons"]
    assert reasons["wrong number of columns (expected 40)"] == 1
    assert reasons["not an integer"] == 2
    assert r.meta["bad_rows"]["total"] == 5


def test_refuses_existing_target_unless_overwrite(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "t.txt", criteo_text(30))
    prepare("criteo", path, tmp_path / "out", min_count=1)
    with pytest.raises(ConfigError, match="exists"):
        prepare("criteo", path, tmp_path / "out", min_count=1)
    r = prepare("criteo", path, tmp_path / "out", min_count=2, overwrite=True)
    assert r.meta["protocol"]["min_count"] == 2 and leftovers(tmp_path) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_half_way_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    path = write_raw(tmp_path / "t.txt", criteo_text(50))
    real = finalize.write_split
    calls = []

    def failing(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # the train split is written, then it fails
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(finalize, "write_split", failing)
    with pytest.raises(type(exc)):
        prepare("criteo", path, tmp_path / "out", min_count=1)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_failure_keeps_existing_target_on_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_raw(tmp_path / "t.txt", criteo_text(30))
    prepare("criteo", path, tmp_path / "out", min_count=1)
    monkeypatch.setattr(
        finalize, "write_split", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x"))
    )
    with pytest.raises(RuntimeError):
        prepare("criteo", path, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "meta.json").exists() and leftovers(tmp_path) == []


def test_options_are_checked(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "t.txt", criteo_text(10))
    for kwargs in ({"split": "8:1"}, {"split": "a:b:c"}, {"on_bad_row": "ignore"}, {"valid": path}):
        with pytest.raises(ConfigError):
            prepare("criteo", path, tmp_path / "out", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--schema"):
        prepare("csv", path, tmp_path / "out")


CLI_CASES = {
    "columns": lambda d: ["--input", str(write_raw(d / "t.txt", GOOD + BAD_CRITEO["columns"][0]))],
    "integer": lambda d: ["--input", str(write_raw(d / "t.txt", GOOD + BAD_CRITEO["integer"][0]))],
    "label": lambda d: ["--input", str(write_raw(d / "t.txt", BAD_CRITEO["label"][0]))],
    "missing": lambda d: ["--input", str(d / "t.txt")],
    "empty": lambda d: ["--input", str(write_raw(d / "t.txt", ""))],
    "bytes": lambda d: ["--input", str(write_raw(d / "t.txt", GOOD.encode()[:-2] + b"\xff\n"))],
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_one_line_error_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    args = CLI_CASES[case](tmp_path)
    rc = main(["prepare", "--format", "criteo", *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "t.txt" in err and err.startswith("autoloss prepare: error:")
    assert not (tmp_path / "out").exists()


def test_cli_schema_absent_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_raw(tmp_path / "d.csv", "y,a\n0,x\n")
    schema = write_raw(tmp_path / "s.yaml", "label: y\ncategorical: [zz]\n")
    rc = main(
        [
            "prepare",
            "--format",
            "csv",
            "--input",
            str(data),
            "--schema",
            str(schema),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "d.csv" in err and "zz" in err and err.count("\n") == 1


def test_cli_skip_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_raw(tmp_path / "t.txt", GOOD * 5 + BAD_CRITEO["label"][0])
    rc = main(
        [
            "prepare",
            "--format",
            "criteo",
            "--input",
            str(path),
            "--out",
            str(tmp_path / "o"),
            "--on-bad-row",
            "skip",
            "--min-count",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "skipped 1 bad rows (label is not 0 or 1: 1)" in out and "rows/s" in out


@pytest.mark.parametrize("mode", ["on", "off"])
def test_cli_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    path = write_raw(tmp_path / "t.txt", GOOD * 50)
    argv = ["prepare", "--format", "criteo", "--input", str(path), "--out", str(tmp_path / "o")]
    rc = main([*argv, "--min-count", "1", "--chunk-rows", "8", "--progress", mode])
    captured = capsys.readouterr()
    assert rc == 0 and "rows/s" in captured.out
    # tqdm's bar: the rows read so far, with the unit
    assert ("prepare: 50.0 rows" in captured.err) == (mode == "on")
