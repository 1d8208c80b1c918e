"""Reading and writing the files the tool owns: atomic writes, ``weights_only`` loads.

Every file is written to a temporary file beside its target and renamed over it, so a reader (or
a run killed mid-write) sees either the old file or the new one, never a partial one. Saved
weights are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, no
code from the file is ever executed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from autoloss.errors import CheckpointError, ConfigError

#: Temporary files are named ``.NAME.<random>.tmp`` beside their target.
TMP_SUFFIX = ".tmp"


def _proc_umask() -> int | None:
    """The umask from ``/proc/self/status`` (Linux >= 4.7), read without changing it; else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _import_umask() -> int:
    """The umask at import: from /proc, or set-and-restored once (before any writer thread)."""
    umask = _proc_umask()
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


_IMPORT_UMASK = _import_umask()


def _file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666`` less the umask (the current
    one where /proc tells it, else the one at import)."""
    umask = _proc_umask()
    return 0o666 & ~(_IMPORT_UMASK if umask is None else umask)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a path (``np.save``,
    ``pq.write_table``, ...); on success it is fsynced and renamed over ``path``, on failure
    removed. The file gets the mode a plain ``open(path, "w")`` would (``0o666`` less the
    umask), not ``mkstemp``'s 0600."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:  # a missing or read-only directory, a full disk: the user's to fix
        raise ConfigError(f"cannot write here ({exc.strerror or exc})", path=path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(path: str | Path, mode: str = "wb", **open_kw: Any) -> Iterator[IO[Any]]:
    """An open file that becomes ``path`` atomically when the block ends without an error."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kw) as fh:
        yield fh


def _atomic_replace(path: Path, write: Any) -> None:
    with atomic_output(path, "wb") as fh:
        write(fh)


def check_creatable(out: Path, option: str = "--out") -> None:
    """ConfigError (naming ``option``) when ``out`` cannot be created because one of its parents
    is a file, not a directory."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"cannot create it: {parent} is a file, not a directory",
                    path=out,
                    column=option,
                )
            break


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
