"""Where the tasks of a map-reduce ``prepare`` run: this process, threads, or Ray tasks.

A :class:`TaskExecutor` runs one phase at a time: ``map(fn, jobs)`` calls ``fn(job)`` for every
job, wherever it runs, and returns the results in job order. The map-reduce
(:mod:`autoloss.data.mapreduce.plan`) is the same whatever the executor; they differ only in
where the calls happen and how many at once:

* :class:`SerialTasks`: one after the other in this process (what the tests and the smoke
  benchmark use without Ray);
* :class:`ThreadTasks`: a pool of threads in this process;
* :class:`RayTasks`: one Ray task per job (``prepare --executor ray``), each asking for one CPU,
  at most ``--workers`` at once (0: as many as the cluster has CPUs), on a new local Ray
  instance or the cluster at ``--address``. Paths are the driver's, so the inputs and ``--out``
  must be on storage every node sees.

A failing task ends its phase: jobs not started are not started, and once the tasks under way
have ended the error of the first failing job *by position* is raised, the error the serial
``prepare`` gives (it reads the inputs in that order). Ray runs a task again when its worker
dies (up to :data:`RAY_RETRIES` times; every task's writes are its own, so a rerun writes the
same bytes); an error the task raises is not retried.

Ray is optional (``pip install 'autoloss-rec[ray]'``): it is imported only by :class:`RayTasks`,
which says so in one line when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from autoloss import raycluster
from autoloss.errors import AutolossError, ConfigError
from autoloss.raycluster import import_ray

EXECUTORS = ("local", "ray")
#: How many times Ray runs a task again after its worker died.
RAY_RETRIES = 3
#: Seconds to wait for cancelled Ray tasks to end before the phase's error is raised.
CANCEL_WAIT_S = 10.0

Done = Callable[[int, Any], None]


class TaskExecutor:
    """Runs the jobs of one phase (see the module doc). Used as a context manager around the
    phases of one ``prepare``: :meth:`start` before the first, :meth:`stop` after the last."""

    def start(self) -> None:
        """Get ready to run tasks (connect to a cluster)."""

    def stop(self) -> None:
        """Release what :meth:`start` took."""

    def __enter__(self) -> TaskExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        return "in this process"

    def map(
        self, fn: Callable[[Any], Any], jobs: Sequence[Any], done: Done | None = None
    ) -> list[Any]:
        """``[fn(job) for job in jobs]``, run wherever this executor runs tasks; ``done(i,
        result)`` is called in this thread as each job's result comes in."""
        raise NotImplementedError


class SerialTasks(TaskExecutor):
    """Every job in this process, one after the other."""

    def map(
        self, fn: Callable[[Any], Any], jobs: Sequence[Any], done: Done | None = None
    ) -> list[Any]:
        results = []
        for i, job in enumerate(jobs):
            results.append(fn(job))
            if done is not None:
                done(i, results[-1])
        return results


class ThreadTasks(TaskExecutor):
    """Up to ``workers`` jobs at once on threads of this process."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1 for threads, got {workers}")
        self.workers = workers

    def describe(self) -> str:
        return f"on {self.workers} threads"

    def map(
        self, fn: Callable[[Any], Any], jobs: Sequence[Any], done: Done | None = None
    ) -> list[Any]:
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="autoloss-task")
        try:
            futures = [pool.submit(fn, job) for job in jobs]
            results = []
            for i, future in enumerate(futures):  # the first failure by position is raised
                results.append(future.result())
                if done is not None:
                    done(i, results[-1])
            return results
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _in_dir(cwd: str, fn: Callable[[Any], Any], job: Any) -> Any:
    """A Ray task: ``fn(job)`` run from the driver's working directory where this node has it
    (relative paths mean what they meant to the driver, and errors name them alike)."""
    if os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)
    return fn(job)


def _task_error(exc: Exception) -> BaseException:
    """The error of a failed Ray task: the task's own user error or OSError as itself (one line,
    as the serial prepare gives it), anything else as Ray reports it."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, AutolossError | OSError):
        return cause
    return exc


class RayTasks(TaskExecutor):
    """One Ray task per job, one CPU each, at most ``workers`` at once (0: the cluster's CPUs).

    ``address``: the cluster to connect to (``ray.init(address=...)``); None: the one in
    ``RAY_ADDRESS``, or a new local instance. When Ray is already initialised in this process
    (a test, a notebook) that connection is used and left open.
    """

    def __init__(self, address: str | None = None, workers: int = 0) -> None:
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}", column="--workers")
        self.ray = import_ray()
        self.address = address or None
        self.workers = workers
        self.limit = max(1, workers)
        self._started = False

    def describe(self) -> str:
        return f"as Ray tasks on {raycluster.where(self.address)} (at most {self.limit} at once)"

    def start(self) -> None:
        ray = self.ray
        self._started = raycluster.connect(ray, self.address)
        cpus = int(float(ray.cluster_resources().get("CPU", 1.0)))
        self.limit = self.workers or max(1, cpus)

    def stop(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def map(
        self, fn: Callable[[Any], Any], jobs: Sequence[Any], done: Done | None = None
    ) -> list[Any]:
        return _RayPhase(self, fn, jobs, done).run()


class _RayPhase:
    """One phase on Ray: jobs submitted in order, at most ``limit`` under way."""

    def __init__(
        self, tasks: RayTasks, fn: Callable[[Any], Any], jobs: Sequence[Any], done: Done | None
    ) -> None:
        self.ray = tasks.ray
        self.limit = tasks.limit
        self.remote = self.ray.remote(_in_dir).options(
            num_cpus=1, max_retries=RAY_RETRIES, retry_exceptions=False
        )
        self.fn, self.jobs, self.done = fn, jobs, done
        self.cwd = os.getcwd()
        self.results: list[Any] = [None] * len(jobs)
        self.pending: dict[Any, int] = {}  # object ref -> job
        self.errors: dict[int, BaseException] = {}
        self.next = 0

    def run(self) -> list[Any]:
        try:
            while self.pending or (self.next < len(self.jobs) and not self.errors):
                self._submit()
                ready, _ = self.ray.wait(list(self.pending), num_returns=1)
                for ref in ready:
                    self._collect(ref)
        except BaseException:
            self._cancel(list(self.pending))
            raise
        if self.errors:
            raise self.errors[min(self.errors)]
        return self.results

    def _submit(self) -> None:
        while self.next < len(self.jobs) and len(self.pending) < self.limit and not self.errors:
            ref = self.remote.remote(self.cwd, self.fn, self.jobs[self.next])
            self.pending[ref] = self.next
            self.next += 1

    def _collect(self, ref: Any) -> None:
        i = self.pending.pop(ref)
        try:
            self.results[i] = self.ray.get(ref)
        except Exception as exc:
            self.errors[i] = _task_error(exc)
            later = [r for r, k in self.pending.items() if k > i]  # their errors come after
            self._cancel(later)
            for r in later:
                del self.pending[r]
            return
        if self.done is not None:
            self.done(i, self.results[i])

    def _cancel(self, refs: list[Any]) -> None:
        """Stop these tasks (their workers killed) and wait a little for them to end."""
        for ref in refs:
            with suppress(Exception):
                self.ray.cancel(ref, force=True)
        if refs:
            with suppress(Exception):
                self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_S)


def task_executor(
    executor: str | TaskExecutor, address: str | None = None, workers: int = 0
) -> TaskExecutor | None:
    """The executor ``prepare --executor NAME`` asks for (None: the serial pass), its options
    checked in one line each before anything is written."""
    if isinstance(executor, TaskExecutor):
        if address is not None:
            raise ConfigError("--address is an option of --executor ray", column="--address")
        return executor
    if executor not in EXECUTORS:
        raise ConfigError(
            f"--executor {executor}: unknown; choose one of {', '.join(EXECUTORS)}",
            column="--executor",
        )
    if executor == "local":
        if address is not None:
            raise ConfigError("--address is an option of --executor ray", column="--address")
        return None
    return RayTasks(address, workers)
