"""A small pool of threads for per-field work inside one process.

The per-field steps of preparation (hashing tokens, gathers, counts, the final remap) run in
numpy and pyarrow kernels that release the GIL, and every field has its own state, so the
fields of a chunk can be processed side by side. ``workers=1`` runs everything inline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class FieldPool:
    """Runs ``fn(i)`` for ``i`` in ``range(n)`` on up to ``workers`` threads (0: one per core)."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers if workers > 0 else available_cores()
        self._pool = (
            ThreadPoolExecutor(self.workers, thread_name_prefix="autoloss-field")
            if self.workers > 1
            else None
        )

    def run(self, fn: Callable[[int], object], n: int) -> None:
        """Call ``fn`` on every index; the first exception (by index) is raised after all ended."""
        if self._pool is None or n <= 1:
            for i in range(n):
                fn(i)
            return
        futures = [self._pool.submit(fn, i) for i in range(n)]
        errors = [f.exception() for f in futures]
        for exc in errors:
            if exc is not None:
                raise exc

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> FieldPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
