"""The one switch from this package's kernels back to PyTorch's own ops.

Every kernel in :mod:`autoloss.ops` asks :func:`reference` on each call whether to run its
PyTorch reference instead, so the switch acts on models, policies and losses already built:

    from autoloss import ops

    with ops.use_reference():                 # every kernel, until the block ends
        ...
    with ops.use_reference("dropout"):        # one kernel (names: ops.KERNELS)
        ...
    ops.use_reference("softmax", "pairwise")  # without ``with``: on until switched off
    ops.use_reference(on=False)               # every kernel back to its custom code

The environment variable ``AUTOLOSS_REFERENCE_OPS`` gives the starting state, read once when
``autoloss.ops`` is first imported: ``1`` or ``all`` for every kernel, a comma-separated list of
kernel names for those, empty or ``0`` for none. The switch is process-wide (like
``torch.set_num_threads``): it is not per thread, and worker processes read the variable again.
"""

from __future__ import annotations

import os
from types import TracebackType

__all__ = ["ENV", "KERNELS", "reference", "reference_kernels", "use_reference"]

#: The kernels, by the name the switch knows them (what each replaces: ``docs/benchmarks.md``,
#: "Kernels").
KERNELS = (
    "embedding",  # ops.embedding.lookup: the unique-row lookup; reference F.embedding(sparse=True)
    "shared_sort",  # ops.embedding.SHARED_SORT: one sort per batch; reference one per table
    "pairwise",  # ops.interaction.pairwise: one-expression backward; reference autograd's
    "softmax",  # ops.softmax.row_softmax, row_log_softmax; reference F.softmax(z, -1), ...
    "dropout",  # ops.dropout_mask.dropout: 16-bit uniforms from SFC64; reference F.dropout
)

#: The environment variable read for the starting state.
ENV = "AUTOLOSS_REFERENCE_OPS"


def _parse(value: str) -> frozenset[str]:
    value = value.strip().lower()
    if value in ("", "0", "none", "false", "no"):
        return frozenset()
    if value in ("1", "all", "true", "yes"):
        return frozenset(KERNELS)
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    _check(names)
    return names


def _check(names: frozenset[str]) -> None:
    unknown = sorted(names - set(KERNELS))
    if unknown:
        raise ValueError(f"unknown kernel(s) {unknown}: expected names among {list(KERNELS)}")


_active: frozenset[str] = _parse(os.environ.get(ENV, ""))


def reference(kernel: str) -> bool:
    """True where ``kernel`` runs PyTorch's own op now (each kernel asks on every call)."""
    return kernel in _active


def reference_kernels() -> frozenset[str]:
    """The kernels that run their PyTorch reference now."""
    return _active


class use_reference:
    """Run ``kernels`` (every kernel when none is named) as PyTorch's own ops (``on=False``: as
    this package's). Takes effect at once; used as a context manager, the previous state comes
    back when the block ends."""

    def __init__(self, *kernels: str, on: bool = True) -> None:
        global _active
        names = frozenset(kernels) if kernels else frozenset(KERNELS)
        _check(names)
        self._previous = _active
        _active = _active | names if on else _active - names

    def __enter__(self) -> use_reference:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _active
        _active = self._previous
