"""Hostile raw input: every input prepares, or fails with one clean line.

Property-based (hypothesis) tests of every format reader: arbitrary bytes, mangled rows (wrong
column counts, bad numbers, empty fields, huge values, odd encodings, NUL bytes), compressed or
truncated files. Each either prepares or raises an AutolossError whose message is one printable
line naming the file (and the line for a bad row); no other exception, no raw undecodable bytes,
nothing printed on stderr by a library callback or a warning. Then one test per reported
case (``test_caseN_*``: 1 unreadable inputs and --out paths, 3 misleading messages, 4 temporary
directories; case 2, random bytes, is ``test_cli_random_bytes_one_line_exit_2`` here and
``test_case2_predict_random_bytes`` in tests/train/test_predict_inputs.py).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autoloss.data.readers as readers
from autoloss.cli import main
from autoloss.data.prepare import prepare
from autoloss.data.tmpdirs import OWNER_FILE, clean_stale, host_name, make_build_dir
from autoloss.errors import AutolossError, ConfigError, DataError, SchemaError

from .conftest import AVAZU_HEADER, FRAPPE_HEADER, SCHEMA_YAML, criteo_line, criteo_text

# hypothesis and function-scoped fixtures (capfd): reset by hand in each example.
EXAMPLES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

# Reasons of a bad row: such an error must give the line.
ROW_REASONS = (
    "wrong number of columns",
    "not an integer",
    "not a number",
    "label is not",
    "rating is not",
    "missing label",
    "missing rating",
    "undecodable bytes (not UTF-8)",
    "hour is not",
    "integer out of",
    "not a finite number",
    "number too large",
)


@contextlib.contextmanager
def no_unraisable() -> Iterator[list[Any]]:
    """Fail if a library reports an exception it could not raise (``Exception ignored in``)."""
    seen: list[Any] = []
    saved = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        sys.unraisablehook = saved
    assert not seen, [f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}" for u in seen]


def check_message(exc: AutolossError, named: list[Path], data: bytes = b"") -> None:
    """One printable line, naming one of ``named``, no raw undecodable bytes, short."""
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    assert text.isprintable(), text
    assert len(text) < 600, text
    assert any(str(p) in text for p in named), text
    if "\ufffd".encode() not in data:
        assert "\ufffd" not in text, text  # bytes pyarrow could not decode, echoed
    # a problem of a data row names its line; a schema file's own errors (e.g. "min_count: not
    # an integer") have no row
    if any(reason in exc.message for reason in ROW_REASONS) and not isinstance(exc, SchemaError):
        assert exc.line is not None, text


def outcome(
    run: Callable[[], object], named: list[Path], capfd: pytest.CaptureFixture[str], data: bytes
) -> str:
    """Run ``run``: success, or an AutolossError that passes :func:`check_message`; nothing on
    stderr. Any other exception fails the test."""
    capfd.readouterr()
    result = "ok"
    with no_unraisable(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run()
        except AutolossError as exc:
            check_message(exc, named, data)
            result = "error"
    assert not caught, [str(w.message) for w in caught]  # printed on stderr outside pytest
    err = capfd.readouterr().err
    assert err == "", err
    return result


# --- strategies ------------------------------------------------------------------------------
HOSTILE = [
    b"",
    b" ",
    b"nan",
    b"inf",
    b"-inf",
    b"1e309",
    b"9" * 40,
    b"-" + b"9" * 40,
    b"0x1F",
    b"+5",
    b" 7 ",
    b"1_000",
    b"4.5",
    b"-1",
    b"\x00",
    b"a\x00b",
    b"\xff\xfe",
    b"\xc3",
    b"\xef\xbb\xbf1",
    b"\xe2\x80\xa8",
    b"\x1b[31m",
    b'"',
    b'"a""b"',
    b'"unclosed',
    b"\\",
    b"\r",
    "é✓".encode(),
    "\ufffd".encode(),
]
hostile_value = st.one_of(
    st.sampled_from(HOSTILE),
    st.binary(max_size=6),
    st.text(max_size=6).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(-(10**25), 10**25).map(lambda i: str(i).encode()),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda f: repr(f).encode()),
)


def rows(good: st.SearchStrategy[list[bytes]], sep: bytes) -> st.SearchStrategy[bytes]:
    """A line: a good row, one mangled (values replaced, columns added or dropped), or bytes."""

    @st.composite
    def mangled(draw: st.DrawFn) -> bytes:
        fields = list(draw(good))
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = draw(hostile_value)
        change = draw(st.sampled_from(["none", "none", "drop", "add"]))
        if change == "drop":
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        elif change == "add":
            fields.append(draw(hostile_value))
        return sep.join(fields)

    return st.one_of(
        good.map(sep.join), good.map(sep.join), mangled(), st.binary(min_size=1, max_size=30)
    )


@st.composite
def raw_file(
    draw: st.DrawFn,
    good: st.SearchStrategy[list[bytes]],
    sep: bytes,
    header: bytes | None,
) -> bytes:
    lines = draw(st.lists(rows(good, sep), min_size=0, max_size=8))
    if header is not None:
        lines.insert(0, draw(st.one_of(st.just(header), st.just(header), rows(good, sep))))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    return end.join(lines) + draw(st.sampled_from([end, b""]))


def write_input(path: Path, data: bytes, packing: str) -> Path:
    """``data`` plain, gzip/bz2-compressed, or compressed and cut short."""
    if packing == "plain":
        path.write_bytes(data)
        return path
    codec = packing.split("-")[0]
    out = path.with_name(path.name + {"gzip": ".gz", "bz2": ".bz2"}[codec])
    packed = gzip.compress(data) if codec == "gzip" else bz2.compress(data)
    out.write_bytes(packed[: len(packed) // 2] if packing.endswith("-cut") else packed)
    return out


packings = st.sampled_from(["plain", "plain", "plain", "gzip", "bz2", "gzip-cut", "bz2-cut"])

digits = st.integers(0, 300).map(lambda i: str(i).encode())
label01 = st.sampled_from([b"0", b"1"])
token = st.sampled_from([b"a1", b"b2", b"c3", b"", b"d4"])

criteo_good = st.tuples(label01, *[digits] * 13, *[token] * 26).map(list)
avazu_good = st.tuples(
    digits, label01, st.sampled_from([b"14102100", b"14102923"]), *[token] * 21
).map(list)
ratings_good = st.tuples(
    digits,
    st.integers(1, 4).map(lambda i: str(i).encode()),
    st.sampled_from([b"1.0", b"4.5"]),
    digits,
).map(list)
frappe_good = st.tuples(label01, *[token] * 10).map(list)
csv_good = st.tuples(
    label01, token, token, digits, digits, digits, digits, st.sampled_from([b"t1|t2", b""]), token
).map(list)

MOVIES = (
    b"movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n2,Jumanji (1995),Children\n"
)

FORMATS: dict[str, tuple[Any, bytes, bytes | None, str]] = {
    "criteo": (criteo_good, b"\t", None, "train.txt"),
    "avazu": (avazu_good, b",", AVAZU_HEADER.encode(), "train.csv"),
    "movielens": (ratings_good, b",", b"userId,movieId,rating,timestamp", "ratings.csv"),
    "frappe": (frappe_good, b",", FRAPPE_HEADER.encode(), "train.csv"),
    "csv": (
        csv_good,
        b",",
        b"click,user,item,count,price,score,views,tags,ignored",
        "data.csv",
    ),
}


def _prepare_case(
    fmt: str, data: bytes, packing: str, skip: bool, root: Path
) -> tuple[Any, list[Path]]:
    _good, _sep, _header, name = FORMATS[fmt]
    path = write_input(root / name, data, packing)
    kwargs: dict[str, Any] = {"min_count": 1, "workers": 1, "chunk_rows": 4}
    if skip:
        kwargs["on_bad_row"] = "skip"
    named = [path]
    if fmt == "csv":
        schema = root / "schema.yaml"
        schema.write_text(SCHEMA_YAML)
        kwargs["schema"] = schema
    if fmt == "movielens":
        (root / "movies.csv").write_bytes(MOVIES)
    return (lambda: prepare(fmt, path, root / "out", **kwargs)), named


def _hostile_prepare(fmt: str) -> Any:
    good, sep, header, _name = FORMATS[fmt]

    @EXAMPLES
    @given(data=raw_file(good, sep, header), packing=packings, skip=st.booleans())
    def test(capfd: pytest.CaptureFixture[str], data: bytes, packing: str, skip: bool) -> None:
        with tempfile.TemporaryDirectory() as d:
            run, named = _prepare_case(fmt, data, packing, skip, Path(d))
            outcome(run, named, capfd, data)
            leftovers = [p.name for p in Path(d).iterdir() if p.name.startswith(".")]
            assert leftovers == []

    return test


test_hostile_criteo = _hostile_prepare("criteo")
test_hostile_avazu = _hostile_prepare("avazu")
test_hostile_movielens = _hostile_prepare("movielens")
test_hostile_frappe = _hostile_prepare("frappe")
test_hostile_csv = _hostile_prepare("csv")


@EXAMPLES
@given(data=st.binary(max_size=300), fmt=st.sampled_from(sorted(FORMATS)))
def test_random_bytes_every_format(
    capfd: pytest.CaptureFixture[str], data: bytes, fmt: str
) -> None:
    with tempfile.TemporaryDirectory() as d:
        run, named = _prepare_case(fmt, data, "plain", False, Path(d))
        outcome(run, named, capfd, data)


@EXAMPLES
@given(
    data=raw_file(ratings_good, b",", b"userId,movieId,rating,timestamp"),
    movies=st.binary(max_size=80),
)
def test_hostile_movies_side_file(
    capfd: pytest.CaptureFixture[str], data: bytes, movies: bytes
) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        ratings = write_input(root / "ratings.csv", data, "plain")
        (root / "movies.csv").write_bytes(b"movieId,title,genres\n" + movies)
        outcome(
            lambda: prepare("movielens", ratings, root / "out", min_count=1, workers=1),
            [ratings, root / "movies.csv"],
            capfd,
            data + movies,
        )


schema_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-3, 30),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["click", "user", "item", "count", "ln2", "none", "quantile:4", "|", ","]),
        st.text(max_size=6),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = [
    "label",
    "task",
    "categorical",
    "numeric",
    "multivalue",
    "min_count",
    "num_classes",
    "delimiter",
]


@st.composite
def schema_text(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["dict", "dict", "yaml-ish", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "yaml-ish":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    base = yaml.safe_load(SCHEMA_YAML)
    for key in draw(st.lists(st.sampled_from([*KEYS, "extra"]), max_size=3)):
        if draw(st.booleans()):
            base.pop(key, None)
        else:
            base[key] = draw(schema_values)
    return yaml.safe_dump(base, allow_unicode=True).encode()


@EXAMPLES
@given(schema=schema_text(), data=raw_file(csv_good, b",", FORMATS["csv"][2]))
def test_hostile_csv_schema(capfd: pytest.CaptureFixture[str], schema: bytes, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        path = write_input(root / "data.csv", data, "plain")
        (root / "schema.yaml").write_bytes(schema)
        outcome(
            lambda: prepare("csv", path, root / "out", schema=root / "schema.yaml", workers=1),
            [path, root / "schema.yaml"],
            capfd,
            data + schema,
        )


# --- end to end: the command line --------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["criteo", "avazu", "movielens", "frappe"])
def test_cli_random_bytes_one_line_exit_2(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], fmt: str
) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(bytes(np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8)))
    with no_unraisable():
        rc = main(["prepare", "--format", fmt, "--input", str(path), "--out", str(tmp_path / "o")])
    err = capfd.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("autoloss prepare: error: ") and str(path) in err
    assert "Traceback" not in err and "Exception ignored" not in err and "\ufffd" not in err
    assert err[:-1].isprintable()


# --- case 1: unreadable inputs, unusable --out ----------------------------------------------------
def _packed(codec: str, data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, codec) as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


EXT = {"gzip": ".gz", "bz2": ".bz2", "zstd": ".zst"}


@pytest.mark.parametrize("codec", sorted(EXT))
@pytest.mark.parametrize("damage", ["cut-head", "cut-late", "not-compressed"])
def test_case1_bad_compressed_input(tmp_path: Path, codec: str, damage: str) -> None:
    text = criteo_text(30).encode() * (1 if damage != "cut-late" else 200)  # cut-late: > 1 MiB
    packed = _packed(codec, text)
    data = {
        "cut-head": packed[: len(packed) // 2],
        "cut-late": packed[: int(len(packed) * 0.9)],
        "not-compressed": text,
    }[damage]
    path = tmp_path / f"t.txt{EXT[codec]}"
    path.write_bytes(data)
    with pytest.raises(DataError, match=f"cannot decompress .*not {codec}-compressed") as err:
        prepare("criteo", path, tmp_path / "out", workers=1)
    check_message(err.value, [path])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_case1_unreadable_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(10))
    path.chmod(0)  # does not bite for root: simulate what open() then raises
    real = pa.input_stream

    def denied(source: Any, *args: Any, **kwargs: Any) -> Any:
        if str(source) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(readers.pa, "input_stream", denied)
    with pytest.raises(DataError, match=r"cannot open \(permission denied\)") as err:
        prepare("criteo", path, tmp_path / "out")
    check_message(err.value, [path])


def test_case1_fifo_input(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        prepare("criteo", fifo, tmp_path / "out")


def test_case1_out_under_a_file(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(10))
    out = tmp_path / "somefile"
    out.write_text("x")
    rc = main(["prepare", "--format", "criteo", "--input", str(path), "--out", str(out / "sub")])
    err = capfd.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"cannot create it: {out} is a file, not a directory" in err


# --- case 3: misleading messages ------------------------------------------------------------------
def test_case3_directory_as_input(tmp_path: Path) -> None:
    """A directory stands for its files (none, sub-directories aside: one line)."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="the input directory has no files"):
        prepare("criteo", tmp_path / "d", tmp_path / "out")
    (tmp_path / "d" / "a.txt").write_text(criteo_text(10))
    prepare("criteo", tmp_path / "d", tmp_path / "out")  # the sub-directory is not an input


def test_case3_file_as_out(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(10))
    other = tmp_path / "other.txt"
    other.write_text("x")
    with pytest.raises(ConfigError, match=r"is a file, not a dataset directory \(use --overwrite"):
        prepare("criteo", path, other)
    with pytest.raises(ConfigError, match="is the input"):
        prepare("criteo", path, path, overwrite=True)
    with pytest.raises(ConfigError, match="holds the input"):
        prepare("criteo", path, tmp_path, overwrite=True)


def _long_line_file(tmp_path: Path, width: int, bad: bool = False) -> Path:
    """~1.5 MiB of rows, then a row with a ``width``-byte value, then more rows; with ``bad``,
    a row with too few columns before the long one and one after it."""
    rows = criteo_text(100).splitlines(keepends=True) * 60
    long = criteo_line(1, ["1"] * 13, ["ab"] * 25 + ["x" * width])
    short = criteo_line(0, ["1"] * 13, ["ab"] * 20)
    if bad:
        rows[10:10] = [short]
        rows[-10:-10] = [short]
    path = tmp_path / "long.txt"
    path.write_text("".join(rows[:5000]) + long + "".join(rows[5000:]))
    return path


def test_case3_line_longer_than_block_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10 MB line: the reader retries with blocks that hold it (rows already handed out and
    bad rows already counted are not seen twice): the dataset is the one a large block gives."""
    path = _long_line_file(tmp_path, 10_000_000, bad=True)
    kw: dict[str, Any] = {"min_count": 1, "chunk_rows": 500, "on_bad_row": "skip"}
    got = prepare("criteo", path, tmp_path / "a", **kw)
    assert got.bad_rows["total"] == 2 and got.rows == 6001
    monkeypatch.setattr(readers, "_BLOCK", 1 << 25)
    ref = prepare("criteo", path, tmp_path / "b", **kw)
    assert got.splits == ref.splits and got.bad_rows == ref.bad_rows
    for split in ("train", "valid", "test"):
        for arr in ("x", "y"):
            a = np.load(tmp_path / "a" / split / f"{arr}.npy")
            b = np.load(tmp_path / "b" / split / f"{arr}.npy")
            np.testing.assert_array_equal(a, b)


def test_case3_line_longer_than_largest_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _long_line_file(tmp_path, 3_000_000)
    monkeypatch.setattr(readers, "_MAX_BLOCK", 1 << 22)
    with pytest.raises(DataError, match="more than the CSV reader's largest block") as err:
        prepare("criteo", path, tmp_path / "out")
    assert err.value.line == 5001
    check_message(err.value, [path])


# --- case 4: temporary directories -------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_tmp(out: Path, name: str, size: int = 1000) -> Path:
    d = out.parent / name
    (d / "_raw").mkdir(parents=True)
    (d / "_raw" / "spill.bin").write_bytes(b"\0" * size)
    return d


def test_case4_stale_temporary_directories_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(20))
    out = tmp_path / "out"
    dead = _dead_pid()
    stale = _fake_tmp(out, f".out.tmp-{host_name()}-{dead}-0123abcd", 5000)
    legacy = _fake_tmp(out, f".out.tmp-{dead}-89abcdef", 3000)  # earlier versions: no host
    live = _fake_tmp(out, f".out.tmp-{host_name()}-{os.getpid()}-aaaaaaaa")
    other_host = _fake_tmp(out, f".out.tmp-elsewhere-{dead}-bbbbbbbb")
    other_target = _fake_tmp(out, f".outer.tmp-{host_name()}-{dead}-cccccccc")
    r = prepare("criteo", path, out, min_count=1)
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and other_host.exists() and other_target.exists()
    assert (r.cleaned.removed, r.cleaned.bytes, r.cleaned.kept) == (2, 8000, 2)
    assert not (out / OWNER_FILE).exists()


def test_case4_clean_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    _fake_tmp(out, f".out.tmp-{host_name()}-{_dead_pid()}-0123abcd", 2_500_000)
    assert main(["prepare", "--clean", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert said == f"removed 1 stale temporary directory of {out} (2.5 MB)\n"
    assert [p.name for p in tmp_path.iterdir()] == []
    assert main(["prepare", "--clean", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("removed 0 stale temporary directories")


def test_case4_interrupted_overwrite_is_put_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = tmp_path / f".out.old-{host_name()}-{_dead_pid()}-0123abcd"
    old.mkdir()
    (old / "meta.json").write_text("{}")
    cleaned = clean_stale(out)
    assert cleaned.restored and (out / "meta.json").exists() and not old.exists()


def test_case4_kill_9_then_next_prepare_cleans(tmp_path: Path) -> None:
    """A process killed with SIGKILL leaves its build directory (with its owner); the next
    prepare of the same target removes it."""
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from autoloss.data.tmpdirs import make_build_dir
        tmp = make_build_dir(Path({str(out)!r}))
        (tmp / "spill.bin").write_bytes(b"x" * 4096)
        print(tmp, flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_dir() and (tmp / OWNER_FILE).is_file()
    assert clean_stale(out).kept == 1  # its owner is alive
    proc.kill()
    proc.wait()
    assert tmp.is_dir()
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(20))
    r = prepare("criteo", path, out, min_count=1)
    assert not tmp.exists() and r.cleaned.removed == 1 and r.cleaned.bytes >= 4096
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.txt"]


def test_case4_sigterm_removes_the_build_directory(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(50))
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import sys, time
        import autoloss.data.finalize as finalize
        from autoloss.cli import main
        def slow(*a, **k):
            print("writing", flush=True)
            time.sleep(60)
        finalize.write_split = slow
        sys.exit(main(["prepare", "--format", "criteo", "--input", {str(path)!r},
                       "--out", {str(out)!r}, "--min-count", "1"]))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    assert any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir())
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err == "autoloss prepare: terminated (SIGTERM)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


@pytest.mark.parametrize("target", ["file", "link"])
def test_case4_overwrite_a_file_leaves_nothing(tmp_path: Path, target: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text(criteo_text(20))
    out = tmp_path / "out"
    if target == "file":
        out.write_text("old")
    else:
        out.symlink_to(tmp_path / "nowhere")
    prepare("criteo", path, out, min_count=1, overwrite=True)
    assert (out / "meta.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "t.txt"]


def test_case4_build_directory_names_its_owner(tmp_path: Path) -> None:
    tmp = make_build_dir(tmp_path / "out")
    assert tmp.name.startswith(f".out.tmp-{host_name()}-{os.getpid()}-")
    assert f'"pid": {os.getpid()}' in (tmp / OWNER_FILE).read_text()
    assert clean_stale(tmp_path / "out").kept == 1  # its owner, this process, is alive
