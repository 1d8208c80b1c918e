"""The C heap under training (glibc's malloc; on other C libraries both functions do nothing).

A training step allocates and frees the same megabyte-sized temporaries (activations, gradients,
gathered embedding rows) at every step. With glibc's defaults the freed memory at the top of the
heap goes back to the system as soon as a few megabytes are free, and blocks of 32 MiB or more are
always mapped and unmapped, so the next step faults the same pages in again.
:func:`keep_freed_memory` keeps freed memory for reuse instead (the trainer's default,
``train.heap=keep``); :func:`trim` gives the free part back where a phase ends (after scoring a
split, whose temporaries are larger than a step's). What each costs and saves:
docs/benchmarks.md, "Kernels" (``benchmarks/heap_policy.py``).

Both act on the whole process, like ``torch.set_num_threads``.
"""

from __future__ import annotations

import ctypes
from typing import Any

#: mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

#: Blocks below this size come from the heap (reused); larger ones are mapped and unmapped.
MMAP_THRESHOLD = 64 << 20
#: Free memory at the top of the heap kept before any is given back.
TRIM_THRESHOLD = 512 << 20
#: Extra memory requested whenever the heap grows, so that it grows in fewer, larger steps.
TOP_PAD = 16 << 20


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (present on glibc only)
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def keep_freed_memory() -> bool:
    """Keep freed memory in the heap for the next step (glibc); False where that is not possible.

    Sets the trim threshold, top pad and mmap threshold to :data:`TRIM_THRESHOLD`,
    :data:`TOP_PAD` and :data:`MMAP_THRESHOLD` (which also ends glibc's own adjustment of them).
    """
    if _LIBC is None:
        return False
    settings = (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (_M_TOP_PAD, TOP_PAD),
    )
    # each one, even if another is refused
    applied = [_LIBC.mallopt(param, value) == 1 for param, value in settings]
    return all(applied)


def trim() -> None:
    """Give the heap's free memory back to the system (glibc). Scoring a split allocates larger
    temporaries per batch than a training step; glibc would keep them as a fragmented heap, and a
    training process's memory would grow with the split's size."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
