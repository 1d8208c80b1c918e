"""``prepare --executor ray``: the map-reduce over the input files gives the serial ``prepare``'s
dataset byte for byte (every file; meta.json but for its time fields), whatever runs its tasks
(this process, threads, Ray); a failing task leaves nothing behind and a rerun gives the same
bytes; without Ray, one line. The real-Ray test is slow and needs ``autoloss-rec[ray]``."""

from __future__ import annotations

import json
import os
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from autoloss.cli import main
from autoloss.data import parse_pass, readers
from autoloss.data.mapreduce.encode import encode_file
from autoloss.data.mapreduce.executors import (
    RAY_RETRIES,
    RayTasks,
    SerialTasks,
    ThreadTasks,
)
from autoloss.data.mapreduce.scan import ScanResult, scan_file
from autoloss.data.prepare import prepare
from autoloss.data.synth import write_synthetic_criteo_files
from autoloss.errors import DataError
from autoloss.raycluster import RAY_MISSING

from .conftest import (
    MOVIES_CSV,
    SCHEMA_YAML,
    criteo_text,
    csv_text,
    frappe_text,
    ratings_text,
    write_raw,
)

#: meta.json fields that differ between two runs of the same prepare.
TIME_FIELDS = ("created", "seconds")


def dataset_files(path: Path) -> dict[str, bytes]:
    """Every file of a dataset directory, meta.json without its time fields."""
    found = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "meta.json":
                meta = json.loads(data)
                for key in TIME_FIELDS:
                    meta.pop(key)
                data = json.dumps(meta, indent=1).encode()
            found[str(p.relative_to(path))] = data
    return found


def assert_same_dataset(a: Path, b: Path) -> None:
    fa, fb = dataset_files(a), dataset_files(b)
    assert sorted(fa) == sorted(fb)
    assert [name for name in fa if fa[name] != fb[name]] == []


def leftovers(root: Path) -> list[str]:
    """Hidden (temporary) entries beside the datasets of ``root``."""
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


# --- inputs ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSV reader parses 16 KiB blocks (not 1 MiB), so that small files make several
    chunks (a chunk is made of whole blocks)."""
    monkeypatch.setattr(readers, "_BLOCK", 1 << 14)


def criteo_days(d: Path) -> dict[str, Any]:
    """Four gzip day files of synthetic Criteo, several chunks each; min-count and seed set."""
    files = write_synthetic_criteo_files(d / "days", 4000, 4, seed=3)
    return {"format": "criteo", "inputs": files, "min_count": 3, "seed": 11, "chunk_rows": 150}


def csv_parts(d: Path) -> dict[str, Any]:
    """Three csv files with every kind of field (ln2, quantile, dense, log2, bags)."""
    lines = csv_text(600, seed=4).splitlines()
    files = [
        write_raw(d / f"part{i}.csv", "\n".join([lines[0], *lines[1 + 200 * i : 201 + 200 * i]]))
        for i in range(3)
    ]
    schema = write_raw(d / "schema.yaml", SCHEMA_YAML)
    return {"format": "csv", "inputs": files, "schema": schema, "chunk_rows": 37}


def frappe_presplit(d: Path) -> dict[str, Any]:
    paths = [write_raw(d / f"{n}.csv.gz", frappe_text(r, s)) for n, r, s in
             (("train", 300, 1), ("valid", 80, 2), ("test", 60, 3))]  # fmt: skip
    return {"format": "frappe", "inputs": paths[0], "valid": paths[1], "test": paths[2],
            "chunk_rows": 50}  # fmt: skip


def temporal_parts(d: Path) -> dict[str, Any]:
    """Two csv files split by their time column (rows not in time order)."""
    schema = write_raw(d / "schema.yaml", "label: y\ncategorical: [user]\nnumeric: {p: none}\n"
                       "time: t\n")  # fmt: skip
    files = []
    for i in range(2):
        rows = [f"{(k * 7 + i) % 3 % 2},u{(k * 13 + i) % 17},{k % 5}.5,{(k * 37 + i) % 301}"
                for k in range(150)]  # fmt: skip
        files.append(write_raw(d / f"t{i}.csv", "y,user,p,t\n" + "\n".join(rows) + "\n"))
    return {"format": "csv", "inputs": files, "schema": schema, "split": "temporal:7:2:1",
            "chunk_rows": 40}  # fmt: skip


def implicit_ratings(d: Path) -> dict[str, Any]:
    write_raw(d / "ml" / "movies.csv", MOVIES_CSV)
    ratings = write_raw(d / "ml" / "ratings.csv", ratings_text(300, seed=5))
    return {"format": "movielens", "inputs": ratings, "task": "implicit", "chunk_rows": 64}


def criteo_bad_rows(d: Path) -> dict[str, Any]:
    """Three files, the last two with bad rows (a bad integer, a missing column), skipped."""
    texts = [criteo_text(150, seed=i).splitlines(keepends=True) for i in range(3)]
    texts[1][20] = texts[1][20].replace("\t", "\tx", 1)
    texts[2][5] = "1\t2\n"
    texts[2][90] = texts[2][90].replace("\t", "\t1.5", 1)
    files = [write_raw(d / f"c{i}.txt", "".join(t)) for i, t in enumerate(texts)]
    return {"format": "criteo", "inputs": files, "on_bad_row": "skip", "min_count": 2,
            "chunk_rows": 32}  # fmt: skip


CASES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "criteo-days": criteo_days,
    "csv-every-field": csv_parts,
    "frappe-presplit": frappe_presplit,
    "temporal": temporal_parts,
    "implicit": implicit_ratings,
    "skip-bad-rows": criteo_bad_rows,
}


# --- the map-reduce against the serial prepare ------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_map_reduce_gives_the_serial_bytes(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arrays, vocabularies (ties broken by first appearance in the stream), meta.json: the
    same bytes, in this process and on threads. The quantile sample is made small, so that the
    inputs' bottom-k samples are merged."""
    monkeypatch.setattr(parse_pass, "QUANTILE_SAMPLE", 50)
    args = CASES[case](tmp_path)
    serial = prepare(**args, out=tmp_path / "serial")
    for name, tasks in (("tasks", SerialTasks()), ("threads", ThreadTasks(3))):
        mapped = prepare(**args, out=tmp_path / name, executor=tasks)
        assert_same_dataset(serial.path, mapped.path)
        assert mapped.splits == serial.splits and mapped.bad_rows == serial.bad_rows
    if case == "skip-bad-rows":
        assert serial.bad_rows["total"] == 3
    assert leftovers(tmp_path) == []


class RecordingTasks(SerialTasks):
    """Keeps the results of the scan."""

    scans: list[ScanResult]

    def map(self, fn: Callable[[Any], Any], jobs: Any, done: Any = None) -> list[Any]:
        results = super().map(fn, jobs, done)
        if fn is scan_file:
            self.scans = results
        return results


def test_map_reduce_reads_chunks_and_counts_progress(tmp_path: Path) -> None:
    args = criteo_days(tmp_path)
    seen: list[int] = []
    tasks = RecordingTasks()
    r = prepare(**args, out=tmp_path / "out", executor=tasks, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == r.rows == 4000 and len(seen) == 4
    assert [s.read for s in tasks.scans] == [1000] * 4
    assert min(len(s.chunks) for s in tasks.scans) >= 3  # several chunks per file


class _Lost(RuntimeError):
    pass


class FailingTasks(SerialTasks):
    """Runs the phase of ``phase`` in order and raises in its job ``at`` (as a worker lost)."""

    def __init__(self, phase: Callable[..., Any], at: int) -> None:
        self.phase, self.at = phase, at

    def map(self, fn: Callable[[Any], Any], jobs: Any, done: Any = None) -> list[Any]:
        if fn is not self.phase:
            return super().map(fn, jobs, done)

        def flaky(job: Any) -> Any:
            if job.index == self.at:
                raise _Lost(f"worker lost in task {job.index}")
            return fn(job)

        return super().map(flaky, jobs, done)


@pytest.mark.parametrize("phase", [scan_file, encode_file], ids=["scan", "encode"])
def test_a_failed_task_leaves_nothing_and_a_rerun_gives_the_same_bytes(
    phase: Callable[..., Any], tmp_path: Path
) -> None:
    args = criteo_days(tmp_path)
    serial = prepare(**args, out=tmp_path / "serial")
    out = tmp_path / "mapped"
    with pytest.raises(_Lost, match="task 2"):
        prepare(**args, out=out, executor=FailingTasks(phase, 2))
    assert not out.exists() and leftovers(tmp_path) == []
    prepare(**args, out=out, executor=SerialTasks())
    assert_same_dataset(serial.path, out)


def test_the_first_bad_input_is_reported_as_the_serial_prepare_does(tmp_path: Path) -> None:
    """Bad rows in inputs 2 and 3 (the third's found first on threads): the error is the
    serial one, naming input 2's line; nothing is written."""
    texts = [criteo_text(60, seed=i).splitlines(keepends=True) for i in range(3)]
    texts[1][40] = texts[1][40].replace("\t", "\tx", 1)
    texts[2][0] = texts[2][0].replace("\t", "\tx", 1)
    files = [write_raw(tmp_path / f"c{i}.txt", "".join(t)) for i, t in enumerate(texts)]
    with pytest.raises(DataError) as serial:
        prepare("criteo", files, tmp_path / "serial")
    for tasks in (SerialTasks(), ThreadTasks(3)):
        with pytest.raises(DataError) as mapped:
            prepare("criteo", files, tmp_path / "mapped", executor=tasks)
        assert str(mapped.value) == str(serial.value) and "c1.txt:41" in str(serial.value)
    assert not (tmp_path / "mapped").exists() and leftovers(tmp_path) == []


def test_thread_tasks_raise_the_first_failure_by_position() -> None:
    import time

    def fn(i: int) -> int:
        if i in (1, 3):
            time.sleep(0.05 if i == 1 else 0)
            raise ValueError(f"job {i}")
        return i

    assert ThreadTasks(2).map(lambda i: i * 2, [1, 2, 3]) == [2, 4, 6]
    with pytest.raises(ValueError, match="job 1"):
        ThreadTasks(4).map(fn, [0, 1, 2, 3])


# --- the command line ------------------------------------------------------------------------
def test_executor_ray_without_ray_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    data = write_raw(tmp_path / "train.txt", criteo_text(50))
    out = tmp_path / "out"
    argv = ["prepare", "--format", "criteo", "--input", str(data), "--out", str(out)]
    assert main([*argv, "--executor", "ray"]) == 2
    assert capsys.readouterr().err == f"autoloss prepare: error: {RAY_MISSING}\n"
    assert main([*argv, "--address", "ray://head:10001"]) == 2
    err = capsys.readouterr().err
    assert err == "autoloss prepare: error: --address is an option of --executor ray\n"
    assert not out.exists() and leftovers(tmp_path) == []


# --- RayTasks, with a stand-in for Ray --------------------------------------------------------
class _TaskError(Exception):
    """As Ray's RayTaskError: the task's exception in ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"task failed: {cause!r}")
        self.cause = cause


class FakeRay(types.ModuleType):
    """Just enough of ``ray`` to drive :class:`RayTasks` in this process: a task runs when
    ``wait`` returns it; what the executor asked for is recorded."""

    def __init__(self) -> None:
        super().__init__("ray")
        self.initialised, self.options, self.cancelled = False, {}, []
        self.under_way: list[int] = []  # tasks submitted and not yet waited for, at each wait
        self.refs: list[list[Any]] = []

    def is_initialized(self) -> bool:
        return self.initialised

    def init(self, address: str | None = None, **kw: Any) -> None:
        self.initialised = True

    def shutdown(self) -> None:
        self.initialised = False

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 3.0}

    def remote(self, fn: Any) -> Any:
        fake = self

        class Task:
            def options(self, **kw: Any) -> Task:
                fake.options = kw
                return self

            def remote(self, *args: Any) -> Any:
                ref = [fn, args, None]
                fake.refs.append(ref)
                return id(ref)

        return Task()

    def _ref(self, key: int) -> list[Any]:
        return next(r for r in self.refs if id(r) == key)

    def wait(self, keys: list[int], num_returns: int = 1, timeout: float | None = None) -> Any:
        self.under_way.append(len(keys))
        ref = self._ref(keys[0])
        try:
            ref[2] = ("ok", ref[0](*ref[1]))
        except Exception as exc:
            ref[2] = ("error", _TaskError(exc))
        return keys[:1], keys[1:]

    def get(self, key: int) -> Any:
        kind, value = self._ref(key)[2]
        if kind == "error":
            raise value
        return value

    def cancel(self, key: int, force: bool = False) -> None:
        self.cancelled.append(key)


def test_ray_tasks_run_in_order_at_most_workers_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    tasks = RayTasks(workers=2)
    with tasks:
        assert fake.initialised and tasks.limit == 2
        assert tasks.map(lambda i: i * i, list(range(7))) == [i * i for i in range(7)]
    assert not fake.initialised and max(fake.under_way) == 2
    assert fake.options == {"num_cpus": 1, "max_retries": RAY_RETRIES, "retry_exceptions": False}
    with RayTasks() as all_cpus:
        assert all_cpus.limit == 3  # the cluster's CPUs


def test_ray_tasks_raise_the_first_failure_by_position(monkeypatch: pytest.MonkeyPatch) -> None:
    """A user error comes back as itself; the later tasks under way are cancelled, none is
    submitted after the failure."""
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)

    def fn(i: int) -> int:
        if i == 1:
            raise DataError("bad row", path="day_1.gz", line=3)
        return i

    with RayTasks(workers=3) as tasks, pytest.raises(DataError, match=r"^day_1.gz:3: bad row$"):
        tasks.map(fn, list(range(6)))
    assert len(fake.refs) == 4  # jobs 0-3 sent (at most 3 at once), 4 and 5 never
    assert len(fake.cancelled) == 2  # jobs 2 and 3, still under way when job 1 failed


# --- real Ray ----------------------------------------------------------------------------------
def crash_once(fn: Callable[[Any], Any], marker: str, index: int) -> Callable[[Any], Any]:
    """``fn``, but the first time it runs job ``index`` its process dies once the job's work is
    done and written, before it reports (a worker lost at the worst moment)."""

    def run(job: Any) -> Any:
        result = fn(job)
        if job.index == index and not os.path.exists(marker):
            with open(marker, "w"):
                pass
            os._exit(1)
        return result

    return run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_prepare_on_a_local_ray_instance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray tasks give the serial bytes (the API and the command line); a worker that dies after
    its task's writes, before it reports, has its task run again by Ray: the same bytes."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'autoloss-rec[ray]'")
    args = criteo_days(tmp_path)
    serial = prepare(**args, out=tmp_path / "serial")
    markers = {scan_file: (str(tmp_path / "scan-crashed"), 1),
               encode_file: (str(tmp_path / "encode-crashed"), 2)}  # fmt: skip

    class CrashingRay(RayTasks):
        def map(self, fn: Any, jobs: Any, done: Any = None) -> list[Any]:
            if fn in markers:
                fn = crash_once(fn, *markers[fn])
            return super().map(fn, jobs, done)

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        r = prepare(**args, out=tmp_path / "ray", executor=RayTasks(workers=2))
        assert_same_dataset(serial.path, r.path)
        crashed = prepare(**args, out=tmp_path / "crashed-ray", executor=CrashingRay(workers=2))
        assert all(os.path.exists(m) for m, _ in markers.values())  # both workers died
        assert_same_dataset(serial.path, crashed.path)
        argv = ["prepare", "--format", "criteo", "--input", *map(str, args["inputs"])]
        argv += ["--out", str(tmp_path / "cli"), "--min-count", "3", "--seed", "11"]
        assert main([*argv, "--chunk-rows", "400", "--executor", "ray", "--workers", "2"]) == 0
        assert "rows: train" in capsys.readouterr().out
        assert_same_dataset(serial.path, tmp_path / "cli")
    finally:
        ray.shutdown()
    assert leftovers(tmp_path) == []


def test_a_directory_input_is_its_files_in_natural_order(tmp_path: Path) -> None:
    """``--input DIR`` (Criteo 1TB's ``day_0.gz ... day_23.gz``): day_2 before day_10, hidden
    files left out; the same dataset as the files named in that order."""
    days = tmp_path / "days"
    write_synthetic_criteo_files(days, rows=1100, files=11, seed=3)
    (days / ".partial.tmp").write_text("not data\n")
    natural = [str(days / f"day_{i}.gz") for i in range(11)]
    common = ["prepare", "--format", "criteo", "--min-count", "1", "--quiet"]
    assert main([*common, "--input", str(days), "--out", str(tmp_path / "dir")]) == 0
    assert main([*common, "--input", *natural, "--out", str(tmp_path / "named")]) == 0
    meta = json.loads((tmp_path / "dir" / "meta.json").read_text())
    assert [Path(i["path"]).name for i in meta["inputs"]] == [f"day_{i}.gz" for i in range(11)]
    a, b = dataset_files(tmp_path / "dir"), dataset_files(tmp_path / "named")
    a.pop("meta.json"), b.pop("meta.json")
    assert a == b
    (tmp_path / "empty").mkdir()
    assert main([*common, "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "e")]) == 2
