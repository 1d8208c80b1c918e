"""Whether a model fits in the memory a run has, checked before it is built.

A typo such as ``--embed-dim 100000000`` would otherwise ask the allocator for terabytes and end
in a ``MemoryError`` (or the kernel's OOM killer) far from the option that caused it.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from autoloss.data.spec import FeatureSpec
from autoloss.errors import ConfigError

#: Bytes per embedding value in training: the float32 weight and Adam's two moments.
TRAINING_BYTES_PER_VALUE = 3 * 4

T = TypeVar("T")


def embedding_bytes(spec: FeatureSpec, embed_dim: int) -> tuple[int, int]:
    """(rows of the embedding tables, bytes they need in training)."""
    rows = sum(spec.cat_vocab) + sum(spec.bag_vocab) + len(spec.dense_names)
    return rows, rows * embed_dim * TRAINING_BYTES_PER_VALUE


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can get: the GPU's free memory, or on the CPU the smaller of
    ``MemAvailable`` and the address-space limit (``ulimit -v``) less what is mapped; None when
    unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    limits = []
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limits.append(soft - _mapped_bytes())
    mem = _meminfo("MemAvailable")
    if mem is not None:
        limits.append(mem)
    return min(limits) if limits else None


def check_fits(spec: FeatureSpec, embed_dim: int, device: torch.device, shards: int = 1) -> None:
    """ConfigError naming ``model.embed_dim`` when the embedding tables alone cannot fit (their
    share, ``1/shards`` of them, where the tables are sharded between processes)."""
    rows, need = embedding_bytes(spec, embed_dim)
    need //= shards
    have = available_bytes(device)
    if have is not None and need > have:
        raise ConfigError(
            f"setting 'model.embed_dim' = {embed_dim}: the embedding tables need {_gb(need)} in "
            f"training ({rows:,} rows x {embed_dim:,} values x {TRAINING_BYTES_PER_VALUE} "
            f"bytes: weights and Adam's moments), more than the {_gb(have)} available"
        )


def out_of_memory(build: Callable[[], T], what: str) -> T:
    """``build()``, with an allocation failure turned into one ConfigError line."""
    try:
        return build()
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise ConfigError(f"not enough memory to build {what} ({_first_line(exc)})") from None
    except RuntimeError as exc:
        if "allocate" not in str(exc):
            raise
        raise ConfigError(f"not enough memory to build {what} ({_first_line(exc)})") from None


def _first_line(exc: Any) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mapped_bytes() -> int:
    """The address space this process maps now (``VmSize``), 0 when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
