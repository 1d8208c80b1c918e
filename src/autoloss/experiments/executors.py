"""Where the runs of a ``compare`` grid execute: this process, local worker processes, Ray tasks.

An :class:`Executor` is given one function and the argument tuples of the runs to train; it calls
the function once per run, wherever it runs, and yields each run's answer (or the exception it
raised) as it comes in. ``compare`` always passes :func:`autoloss.experiments.compare.train_locked`
(lock the run, read its state again, train, resume or restart it into its run directory), so the
run itself is one code path whatever the executor; the executors differ only in where that
call happens and how many happen at once:

* :class:`SerialExecutor`: one after the other, in this process (``--jobs 1``);
* :class:`ProcessExecutor`: ``--jobs N`` spawned worker processes on this machine;
* :class:`RayExecutor`: one Ray task per run (``--executor ray``), each asking for
  ``--cpus-per-run`` CPUs (default: the runs' thread count) and ``--gpus-per-run`` GPUs, on a local Ray instance or the cluster at
  ``--address``. The run directories must be on storage every node sees.

Ray is optional (``pip install 'autoloss-rec[ray]'``): it is imported only by
:class:`RayExecutor`, which says so in one line when it is missing.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Generator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from autoloss import logs, raycluster
from autoloss.errors import AutolossError, ConfigError
from autoloss.raycluster import import_ray

#: The function every executor calls for a run: ``fn(config, quiet) -> (status, payload)``. The
#: run's thread count is in its config (``train.num_threads``): where it runs never changes it.
RunFn = Callable[[dict[str, Any], bool], tuple[str, dict[str, Any]]]
#: A run's answer: what the function returned, or the exception it raised.
Answer = tuple[str, dict[str, Any]] | BaseException
Log = Callable[[str], None]
#: What :meth:`Executor.execute` yields: ``(call, answer)`` as each run finishes.
Answers = Generator[tuple["RunCall", Answer], None, None]

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunCall:
    """One run to train: its name and the arguments of the run function."""

    name: str
    config: dict[str, Any]
    quiet: bool

    def args(self) -> tuple[dict[str, Any], bool]:
        return self.config, self.quiet


class Executor:
    """Where runs execute. Subclasses implement :meth:`execute`."""

    #: Whether several runs train at once (their progress bars would interleave).
    concurrent = False

    def describe(self) -> str:
        """How the runs execute, appended to compare's first log line (empty: in this process)."""
        return ""

    def for_count(self, count: int) -> Executor:
        """The executor for ``count`` runs to train (local workers train one run here)."""
        return self

    def execute(self, fn: RunFn, calls: Sequence[RunCall], log: Log) -> Answers:
        """Call ``fn(*call.args())`` for every call; yield ``(call, answer)`` as each finishes.

        A run raising is yielded as its exception; the others go on. Closing the iterator early
        (an interrupt, a user error) cancels the runs not started yet.
        """
        raise NotImplementedError


class SerialExecutor(Executor):
    """Every run in this process, one after the other."""

    def execute(self, fn: RunFn, calls: Sequence[RunCall], log: Log) -> Answers:
        for call in calls:
            answer: Answer
            try:
                answer = fn(*call.args())
            except Exception as exc:
                answer = exc
            yield call, answer


class ProcessExecutor(Executor):
    """``jobs`` spawned worker processes on this machine (each run with its own thread count)."""

    concurrent = True

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: need at least 1")
        self.jobs = jobs

    def describe(self) -> str:
        return f" in {self.jobs} worker processes"

    def for_count(self, count: int) -> Executor:
        return self if count > 1 else SerialExecutor()

    def execute(self, fn: RunFn, calls: Sequence[RunCall], log: Log) -> Answers:
        if not calls:
            return
        ctx = multiprocessing.get_context("spawn")
        workers = min(self.jobs, len(calls))
        with cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=start_worker,
            initargs=(os.getpid(), logs.configured_level()),
        ) as pool:
            futures = {pool.submit(fn, *call.args()): call for call in calls}
            try:
                for fut in cf.as_completed(futures):
                    error = fut.exception()
                    yield futures[fut], (fut.result() if error is None else error)
            except BaseException:
                for f in futures:
                    f.cancel()  # runs already training finish (and are kept); queued ones never start
                raise


#: How often a worker checks that the process that started it is still alive (seconds).
PARENT_CHECK_S = 0.5


def start_worker(parent: int, log_level: int | None) -> None:
    """A worker's initializer: :func:`watch_parent`, and the command line's logging (a spawned
    process starts without it: the runs' progress would be lost)."""
    logs.configure_worker(log_level)
    watch_parent(parent)


def watch_parent(parent: int) -> None:
    """A worker's initializer: the worker exits when ``parent`` (the ``compare`` process) dies.

    A ``SIGKILL`` of ``compare`` gives its pool no chance to stop the workers; without this they
    would train on as orphans (and multiprocessing's resource tracker, which waits for them,
    with them). The thread sees the worker re-parented (``os.getppid()`` changes) and ends the
    process at once: its run keeps its last checkpoint (written atomically), and its lock, whose
    process is gone, is taken over as stale by the next ``compare``, which resumes the run.
    (``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that spawned the worker ends.)
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="watch parent", daemon=True).start()


def local_executor(jobs: int = 1) -> Executor:
    """``jobs`` worker processes for ``jobs > 1``, else this process."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: need at least 1")
    return ProcessExecutor(jobs) if jobs > 1 else SerialExecutor()


# ---------------------------------------------------------------------------------- Ray
def _in_dir(
    cwd: str, fn: RunFn, config: dict[str, Any], quiet: bool, log_level: int | None = None
) -> Any:
    """A Ray task: ``fn`` run from the driver's working directory where this node has it (so
    that relative paths in the configuration mean what they meant to the driver), logging as
    the driver's command line does (``log_level``)."""
    logs.configure_worker(log_level)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    return fn(config, quiet)


class RayExecutor(Executor):
    """One Ray task per run, each asking for ``cpus`` CPUs and ``gpus`` GPUs.

    ``address``: the cluster to connect to (``ray.init(address=...)``); None: the one in
    ``RAY_ADDRESS``, or a new local instance. When Ray is already initialised in this process
    (a test, a notebook) that connection is used and left open. Tasks are not retried by Ray
    (``max_retries=0``): a failed run is reported like a local failure and retried by running the
    command again, which resumes it from its checkpoint.
    """

    concurrent = True

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0) -> None:
        for flag, value, least in (
            ("--cpus-per-run", cpus, "> 0"),
            ("--gpus-per-run", gpus, ">= 0"),
        ):
            ok = math.isfinite(value) and (value > 0 if flag == "--cpus-per-run" else value >= 0)
            if not ok:
                raise ConfigError(f"{flag} {value:g}: must be {least}")
        self.ray = import_ray()
        self.address = address or None
        self.cpus, self.gpus = float(cpus), float(gpus)

    def describe(self) -> str:
        where = raycluster.where(self.address)
        if self.ray.is_initialized():
            where = "the Ray cluster this process is connected to"
        return f" as Ray tasks on {where} ({self.cpus:g} CPUs, {self.gpus:g} GPUs each)"

    def _connect(self, log: Log) -> bool:
        """Initialise Ray unless it is; True when this executor did (and shuts it down)."""
        ray = self.ray
        if not raycluster.connect(ray, self.address):
            return False
        local = raycluster.is_local(self.address)
        total = ray.cluster_resources()
        short = [
            f"{flag} {need:g} but the cluster has {have:g} {kind}"
            for flag, need, kind in (
                ("--cpus-per-run", self.cpus, "CPU"),
                ("--gpus-per-run", self.gpus, "GPU"),
            )
            if need > (have := float(total.get(kind, 0.0)))
        ]
        if short and local:
            ray.shutdown()
            raise ConfigError(f"{'; '.join(short)}: no run could start")
        if short:
            log(f"warning: {'; '.join(short)} now: the runs wait until nodes with enough join")
        return True

    def execute(self, fn: RunFn, calls: Sequence[RunCall], log: Log) -> Answers:
        if not calls:
            return
        ray = self.ray
        started = self._connect(log)
        try:
            task = ray.remote(_in_dir).options(
                num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0
            )
            cwd, level = os.getcwd(), logs.configured_level()
            pending: dict[Any, RunCall] = {}
            for call in calls:
                # the run directory as every node sees it: an absolute path on shared storage
                config = {**call.config, "out": os.path.abspath(str(call.config["out"]))}
                pending[task.remote(cwd, fn, config, call.quiet, level)] = call
            try:
                while pending:
                    done, _ = ray.wait(list(pending), num_returns=1)
                    for ref in done:
                        call = pending.pop(ref)
                        answer: Answer
                        try:
                            answer = ray.get(ref)
                        except Exception as exc:
                            answer = _task_error(exc)
                        yield call, answer
            except BaseException:
                for ref in pending:  # queued tasks never start; running ones are interrupted
                    with suppress(Exception):  # already finished or gone
                        ray.cancel(ref)
                raise
        finally:
            if started:
                ray.shutdown()


def _task_error(exc: Exception) -> BaseException:
    """The error of a failed Ray task: a user error as itself (one line, as a local run gives it),
    anything else as Ray reports it (its message holds the remote traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, AutolossError):
        return cause
    return exc


def make_executor(
    name: str,
    *,
    jobs: int | None = None,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
) -> Executor:
    """The executor ``--executor NAME`` asks for, its options checked (one line each)."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name}: unknown; choose one of {', '.join(EXECUTORS)}")
    ray_options = {
        "--address": address,
        "--cpus-per-run": cpus_per_run,
        "--gpus-per-run": gpus_per_run,
    }
    if name == "local":
        given = [flag for flag, v in ray_options.items() if v is not None]
        if given:
            raise ConfigError(f"{given[0]} is an option of --executor ray")
        return local_executor(1 if jobs is None else jobs)
    if jobs is not None:
        raise ConfigError(
            "--jobs is an option of --executor local (with Ray, --cpus-per-run and the cluster's"
            " size decide how many runs train at once)"
        )
    return RayExecutor(
        address,
        1.0 if cpus_per_run is None else cpus_per_run,
        0.0 if gpus_per_run is None else gpus_per_run,
    )
