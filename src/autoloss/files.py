"""Reading and writing the files the tool owns: atomic writes, ``weights_only`` loads.

Every file is written to a temporary file beside its target and renamed over it, so a reader (or
a run killed mid-write) sees either the old file or the new one, never a partial one. Saved
weights are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, no
code from the file is ever executed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from autoloss.errors import CheckpointError


def _atomic_replace(path: Path, write: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic_replace(Path(path), lambda fh: fh.write(text.encode("utf-8")))


def save_state(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (tensors and plain containers only)."""
    import torch

    _atomic_replace(Path(path), lambda fh: torch.save(obj, fh))


def load_state(path: Path, what: str) -> Any:
    """The object saved at ``path`` (tensors and plain containers only: ``weights_only=True``).

    Raises CheckpointError naming ``what`` (e.g. "checkpoint", "controller file") when the file
    is missing or cannot be read as such.
    """
    import torch

    if not path.is_file():
        raise CheckpointError(f"{what} not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for corrupt files
        raise CheckpointError(
            f"corrupt or unreadable {what} ({type(exc).__name__})", path=path
        ) from None
