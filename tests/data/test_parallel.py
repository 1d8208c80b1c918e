"""The thread pool of per-field work and the prefetching pipeline: errors reach the caller,
no thread outlives a failed or abandoned run."""

from __future__ import annotations

import threading
import time

import pytest

from autoloss.data.parallel import FieldPool, available_cores
from autoloss.data.readers import prefetch


def test_pool_runs_every_index_and_raises_the_first_error() -> None:
    assert available_cores() >= 1
    for workers in (1, 3):
        seen: list[int] = []
        with FieldPool(workers) as pool:
            pool.run(seen.append, 10)
            assert sorted(seen) == list(range(10))

            def fail(i: int) -> None:
                time.sleep(0.01 * (5 - i) if i < 5 else 0)
                if i in (2, 4):
                    raise ValueError(f"field {i}")

            with pytest.raises(ValueError, match="field 2"):
                pool.run(fail, 6)


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("autoloss")}


def test_chained_prefetch_stops_its_threads_when_the_consumer_stops() -> None:
    before = _threads()
    produced: list[int] = []

    def source():  # type: ignore[no-untyped-def]
        for i in range(1000):
            produced.append(i)
            yield i

    stages = prefetch(x * 2 for x in prefetch(source()))
    assert [next(stages) for _ in range(3)] == [0, 2, 4]
    stages.close()
    time.sleep(0.3)
    assert _threads() == before and len(produced) < 1000


def test_prefetch_hands_errors_to_the_consumer() -> None:
    def source():  # type: ignore[no-untyped-def]
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(x for x in prefetch(source())))
