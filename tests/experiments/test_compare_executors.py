"""Where compare's runs execute (executors) and ``--shard I/N``: one grid split over processes,
job-array tasks or Ray tasks, merged by one experiment directory."""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from autoloss.cli import main
from autoloss.errors import ConfigError
from autoloss.experiments.compare import (
    experiment_from_config,
    parse_shard,
    prepare_experiment,
    run_experiment,
    shard_runs,
)
from autoloss.experiments.executors import (
    ProcessExecutor,
    SerialExecutor,
    make_executor,
)
from autoloss.experiments.tables import read_results_csv
from autoloss.raycluster import RAY_MISSING
from autoloss.train.config import RunConfig

pytestmark = pytest.mark.timeout(600)

# tiny runs: a few steps of a small DeepFM (as the other compare tests)
TINY = ["--epochs", "1", "--max-steps", "3", "--batch-size", "256", "--embed-dim", "4", "--mlp", "8",
        "--progress", "off", "--device", "cpu", "--threads", "1"]  # fmt: skip
#: results.csv columns that depend on what a run computed (not on timing or where it ran)
COMPUTED = ("model", "method", "seed", "test_auc", "test_logloss", "valid_auc", "valid_logloss",
            "best_epoch", "epochs", "steps", "train_rows", "task")  # fmt: skip


def tiny_cfg(data: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    for k, v in {"train.epochs": 1, "train.max_steps": 3, "optim.batch_size": 256, "model.embed_dim": 4,
                 "model.mlp": [8], "train.progress": "off", "train.device": "cpu",
                 "train.num_threads": 1}.items():  # fmt: skip
        cfg.set(k, v)
    return cfg


def computed(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r.get(c) for c in COMPUTED) for r in rows]


def quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------- --shard
@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 12, 30])
def test_shards_are_deterministic_disjoint_and_cover_the_grid(tmp_path: Path, n: int) -> None:
    exp = experiment_from_config(
        tiny_cfg(tmp_path / "data"),
        tmp_path / "exp",
        models=["deepfm", "ipnn"],
        methods=["ce", "focal", "uniform"],
        num_seeds=2,
        grid=[("data.label_noise", ["0", "0.2"])],
    )
    plan = exp.plan()
    assert len(plan) == 24
    shards = [shard_runs(plan, (i, n)) for i in range(1, n + 1)]
    names = [r.name for s in shards for r in s]
    assert sorted(names) == sorted(r.name for r in plan)  # covering ...
    assert len(set(names)) == len(names)  # ... and disjoint
    assert all(abs(len(s) - len(plan) / n) < 1 for s in shards)  # balanced
    again = experiment_from_config(
        tiny_cfg(tmp_path / "data"),
        tmp_path / "other",
        models=["deepfm", "ipnn"],
        methods=["ce", "focal", "uniform"],
        num_seeds=2,
        grid=[("data.label_noise", ["0", "0.2"])],
    )
    for i, s in enumerate(shards, start=1):  # the same in another process given the same grid
        assert [r.name for r in shard_runs(again.plan(), (i, n))] == [r.name for r in s]
    assert shard_runs(plan, None) == plan
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1/1 ") == (1, 1)


@pytest.mark.parametrize(
    "text", ["0/4", "5/4", "1/0", "-1/4", "2", "a/b", "1/4/2", "", "1.5/4", "2/-3", "/4", "1/"]
)
def test_bad_shard_values_are_one_line_errors(
    text: str, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)
    out = tmp_path / "exp"
    argv = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods", "ce",
            "--seeds", "1", "--out", str(out), f"--shard={text}", *TINY]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoloss compare: error: --shard")
    assert "Traceback" not in err and not out.exists()


@pytest.mark.e2e
def test_two_shards_merged_give_the_rows_of_one_full_compare(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["compare", "--data", str(tiny_dataset), "--models", "deepfm",
              "--methods", "ce,uniform", "--seeds", "2", *TINY]  # fmt: skip
    full, sharded = tmp_path / "full", tmp_path / "sharded"
    assert main([*common, "--out", str(full)]) == 0
    assert main([*common, "--out", str(sharded), "--shard", "2/2"]) == 0
    text = capsys.readouterr().out
    half = read_results_csv(sharded / "results.csv")
    assert len(half) == 2 and "**incomplete**: 2 of 4 runs" in (sharded / "table.md").read_text()
    assert "shard 2/2: 2 runs" in text and "the last shard to finish writes complete" in text
    assert main([*common, "--out", str(sharded), "--shard", "1/2"]) == 0  # finishes last

    rows_full = read_results_csv(full / "results.csv")
    rows_sharded = read_results_csv(sharded / "results.csv")
    assert len(rows_full) == 4
    assert computed(rows_sharded) == computed(rows_full)  # the same rows, in the grid's order
    assert "incomplete" not in (sharded / "table.md").read_text()
    assert sorted(p.name for p in (sharded / "runs").iterdir() if not p.name.startswith(".")) == [
        "deepfm-ce-s2021", "deepfm-ce-s2022", "deepfm-uniform-s2021", "deepfm-uniform-s2022",
    ]  # fmt: skip

    # a shard rerun trains nothing; a full compare afterwards neither, and rewrites the tables
    capsys.readouterr()
    assert main([*common, "--out", str(sharded), "--shard", "1/2"]) == 0
    assert "2 finished, 0 to train" in capsys.readouterr().out
    assert main([*common, "--out", str(sharded)]) == 0
    assert "4 finished, 0 to train" in capsys.readouterr().out


@pytest.mark.e2e
def test_the_table_does_not_depend_on_jobs_or_shards(tiny_dataset: Path, tmp_path: Path) -> None:
    # no --threads: every run computes with compare's one thread, wherever and beside whatever
    # it runs (this process has two threads, as a fresh process on a 2-core machine would)
    at = TINY.index("--threads")
    tiny = TINY[:at] + TINY[at + 2 :]
    common = ["compare", "--data", str(tiny_dataset), "--models", "deepfm",
              "--methods", "ce,uniform", "--seeds", "2", *tiny]  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main([*common, "--out", str(tmp_path / "serial")]) == 0
        assert main([*common, "--out", str(tmp_path / "jobs2"), "--jobs", "2"]) == 0
        for shard in ("1/2", "2/2"):
            assert main([*common, "--out", str(tmp_path / "shards"), "--shard", shard]) == 0
    finally:
        torch.set_num_threads(before)
    tables = {
        name: read_results_csv(tmp_path / name / "results.csv")
        for name in ("serial", "jobs2", "shards")
    }
    assert len(tables["serial"]) == 4
    assert computed(tables["jobs2"]) == computed(tables["serial"])
    assert computed(tables["shards"]) == computed(tables["serial"])
    for run in (tmp_path / "jobs2" / "runs").glob("deepfm-*"):
        assert "num_threads: 1" in (run / "config.yaml").read_text()
        assert json.loads((run / "result.json").read_text())["threads"] == 1
    assert "num_threads: 1" in (tmp_path / "serial" / "experiment.yaml").read_text()


# ---------------------------------------------------------------------------------- executors
def test_executor_options_are_checked_in_one_line(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(make_executor("local"), SerialExecutor)
    assert isinstance(make_executor("local", jobs=3), ProcessExecutor)
    assert isinstance(make_executor("local", jobs=3).for_count(1), SerialExecutor)
    out = tmp_path / "exp"
    base = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods", "ce",
            "--seeds", "1", "--out", str(out), *TINY]  # fmt: skip
    for extra, needle in (
        (["--address", "ray://head:10001"], "--address is an option of --executor ray"),
        (["--cpus-per-run", "2"], "--cpus-per-run is an option of --executor ray"),
        (["--jobs", "0"], "--jobs 0: need at least 1"),
        (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
    ):
        try:
            code = main([*base, *extra])
        except SystemExit as exc:  # argparse's own one-line errors
            code = exc.code
        assert code == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err and "Traceback" not in err, err
        assert not out.exists()


def test_executor_ray_without_ray_is_one_line(
    tiny_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match="needs Ray"):
        make_executor("ray")
    out = tmp_path / "exp"
    argv = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods", "ce",
            "--seeds", "1", "--out", str(out), "--executor", "ray", *TINY]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"autoloss compare: error: {RAY_MISSING}\n"
    assert "pip install 'autoloss-rec[ray]'" in err
    assert not out.exists()  # nothing written


def test_ray_options_are_checked_before_ray_is_needed(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    base = ["compare", "--data", str(tiny_dataset), "--models", "deepfm", "--methods", "ce",
            "--seeds", "1", "--out", str(out), "--executor", "ray", *TINY]  # fmt: skip
    for extra, needle in (
        (["--cpus-per-run", "0"], "--cpus-per-run 0: must be > 0"),
        (["--gpus-per-run", "-1"], "--gpus-per-run -1: must be >= 0"),
        (["--cpus-per-run", "nan"], "--cpus-per-run nan"),
        (["--jobs", "2"], "--jobs is an option of --executor local"),
    ):
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
        assert not out.exists()


class _Crash(RuntimeError):
    pass


def test_an_executor_failure_is_reported_like_a_local_one(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails in any executor is named, the others finish, a rerun retries it."""
    import autoloss.experiments.compare as compare

    exp = prepare_experiment(
        experiment_from_config(
            tiny_cfg(tiny_dataset),
            tmp_path / "exp",
            models=["deepfm"],
            methods=["ce", "uniform"],
            num_seeds=1,
        )
    )
    original = compare.train_locked

    def flaky(cfg: dict[str, Any], quiet: bool) -> tuple[str, dict[str, Any]]:
        if str(cfg["out"]).endswith("deepfm-uniform-s2021"):
            raise _Crash("boom")
        return original(cfg, quiet)

    monkeypatch.setattr(compare, "train_locked", flaky)
    logged: list[str] = []
    outcome = run_experiment(exp, executor=SerialExecutor(), log=logged.append, quiet_runs=True)
    assert outcome.trained == ["deepfm-ce-s2021"]
    assert list(outcome.failed) == ["deepfm-uniform-s2021"] and "boom" in str(outcome.failed)
    assert any("run deepfm-uniform-s2021 failed" in line for line in logged)
    monkeypatch.setattr(compare, "train_locked", original)
    again = run_experiment(exp, log=quiet, quiet_runs=True)
    assert again.trained == ["deepfm-uniform-s2021"] and not again.failed


# ---------------------------------------------------------------------------------- Ray
class _TaskError(Exception):
    """As Ray's RayTaskError: the task's exception in ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"task failed: {cause!r}\n(remote traceback)")
        self.cause = cause


class _Ref:
    """An object reference: a finished task's value or error."""

    def __init__(self, kind: str, value: Any) -> None:
        self.kind, self.value = kind, value


class FakeRay(types.ModuleType):
    """Just enough of ``ray`` to drive :class:`RayExecutor` in this process (no Ray needed):
    each task runs when submitted; what the executor asked for is recorded."""

    def __init__(self, cpus: float = 2.0) -> None:
        super().__init__("ray")
        self.initialised, self.cpus = False, cpus
        self.inits: list[dict[str, Any]] = []
        self.options: dict[str, Any] = {}
        self.args: list[tuple[Any, ...]] = []
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return self.initialised

    def init(self, address: str | None = None, **kw: Any) -> None:
        self.initialised = True
        self.inits.append({"address": address, **kw})

    def shutdown(self) -> None:
        self.initialised = False
        self.shutdowns += 1

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": 1.0}

    def remote(self, fn: Any) -> Any:
        fake = self

        class Task:
            def options(self, **kw: Any) -> Task:
                fake.options = kw
                return self

            def remote(self, *args: Any) -> Any:
                fake.args.append(args)
                try:
                    return _Ref("ok", fn(*args))
                except Exception as exc:
                    return _Ref("error", _TaskError(exc))

        return Task()

    def wait(self, refs: list[Any], num_returns: int = 1) -> tuple[list[Any], list[Any]]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: _Ref) -> Any:
        if ref.kind == "error":
            raise ref.value
        return ref.value

    def cancel(self, ref: Any) -> None:
        pass


def test_ray_executor_runs_each_run_as_a_task_of_the_same_function(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in for Ray: one task per run asking for the CPUs and GPUs given, no Ray
    retries, absolute run directories; a failing task is reported like a local failure, a user
    error raised in a task stops the grid with its one line; too few CPUs is one line."""
    import autoloss.experiments.compare as compare
    from autoloss.experiments.executors import RayExecutor

    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.chdir(tmp_path)
    exp = prepare_experiment(
        experiment_from_config(
            tiny_cfg(tiny_dataset),
            Path("exp"),
            models=["deepfm"],
            methods=["ce", "uniform"],
            num_seeds=1,
        )
    )
    original = compare.train_locked

    def flaky(cfg: dict[str, Any], quiet: bool) -> tuple[str, dict[str, Any]]:
        if str(cfg["out"]).endswith("deepfm-uniform-s2021"):
            raise _Crash("boom")
        return original(cfg, quiet)

    monkeypatch.setattr(compare, "train_locked", flaky)
    logged: list[str] = []
    executor = make_executor("ray", cpus_per_run=2, gpus_per_run=0.5)
    assert isinstance(executor, RayExecutor)
    fake.cpus, fake.options = 8, {}
    outcome = run_experiment(exp, executor=executor, log=logged.append, quiet_runs=True)
    assert fake.options == {"num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 0}
    assert fake.inits == [{"address": None, "include_dashboard": False}] and fake.shutdowns == 1
    cwd, fn, cfg, _quiet, _log_level = fake.args[0]
    assert fn is flaky and cwd == str(tmp_path)
    assert cfg["train"]["num_threads"] == 1  # the run's own count, not the task's CPUs
    assert Path(cfg["out"]).is_absolute() and Path(cfg["out"]).parent == tmp_path / "exp" / "runs"
    assert outcome.trained == ["deepfm-ce-s2021"]
    assert list(outcome.failed) == ["deepfm-uniform-s2021"] and "boom" in str(outcome.failed)
    assert any("run deepfm-uniform-s2021 failed" in line for line in logged)

    def user_error(cfg: dict[str, Any], quiet: bool) -> tuple[str, dict[str, Any]]:
        raise ConfigError("setting 'optim.lr' must be > 0")

    monkeypatch.setattr(compare, "train_locked", user_error)
    with pytest.raises(ConfigError, match=r"^setting 'optim.lr' must be > 0$"):
        run_experiment(exp, executor=executor, log=quiet, quiet_runs=True)

    fake.cpus = 1.0  # a local instance smaller than one run: nothing could ever start
    with pytest.raises(ConfigError, match="--cpus-per-run 2 but the cluster has 1 CPU"):
        run_experiment(exp, executor=executor, log=quiet, quiet_runs=True)
    monkeypatch.setattr(compare, "train_locked", original)
    fake.cpus = 2.0
    again = run_experiment(exp, executor=executor, log=quiet, quiet_runs=True)
    assert again.trained == ["deepfm-uniform-s2021"] and not again.failed  # a rerun retries it


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_tiny_grid_on_a_local_ray_instance(tiny_dataset: Path, tmp_path: Path) -> None:
    """Ray tasks train the runs into EXP_DIR; a rerun skips them; the numbers equal local runs'."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'autoloss-rec[ray]'")
    from autoloss.experiments.executors import RayExecutor

    kw: dict[str, Any] = {"models": ["deepfm"], "methods": ["ce", "uniform"], "num_seeds": 2}
    local = prepare_experiment(experiment_from_config(tiny_cfg(tiny_dataset), tmp_path / "l", **kw))
    remote = prepare_experiment(
        experiment_from_config(tiny_cfg(tiny_dataset), tmp_path / "r", **kw)
    )
    run_experiment(local, log=quiet, quiet_runs=True)
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        t0 = time.perf_counter()
        logged: list[str] = []
        a = run_experiment(remote, executor=RayExecutor(cpus=1), log=logged.append, shard=(1, 2))
        assert "as Ray tasks" in logged[0] and not a.failed and len(a.trained) == 2, logged
        b = run_experiment(remote, executor=RayExecutor(cpus=1), log=logged.append)
        assert sorted(b.trained) == ["deepfm-uniform-s2021", "deepfm-uniform-s2022"]  # shard 2/2
        assert not b.failed
        c = run_experiment(remote, executor=RayExecutor(cpus=1), log=logged.append)
        assert c.trained == [] and len(c.skipped) == 4  # resumable: finished runs skipped
        print(f"ray grid: {time.perf_counter() - t0:.1f}s")
    finally:
        ray.shutdown()
    rows = read_results_csv(remote.out / "results.csv")
    assert computed(rows) == computed(read_results_csv(local.out / "results.csv"))
    assert not list(remote.runs_dir.glob("*.lock"))
