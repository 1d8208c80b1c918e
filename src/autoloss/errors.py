"""User-facing errors.

Every problem a user can cause (a bad file, a wrong option, a corrupt checkpoint) raises a subclass
of :class:`AutolossError`. The command line catches them once and prints one line on stderr, exit 2.
"""

from __future__ import annotations

from pathlib import Path


class AutolossError(Exception):
    """Base class of errors caused by inputs or options rather than by a bug."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        column: str | int | None = None,
    ) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            if self.column is not None:
                where += f" (column {self.column})"
            where += ": "
        return f"{where}{self.message}"


class DataError(AutolossError):
    """Malformed or missing input data (raw files or an encoded dataset)."""


class SchemaError(DataError):
    """A schema file that is invalid or names a column the data does not have."""


class ConfigError(AutolossError):
    """An invalid option or configuration value (names the option)."""


class CheckpointError(AutolossError):
    """A missing, corrupt or mismatched checkpoint / controller file."""


class StorageError(AutolossError):
    """The machine refused a write: no space left, a quota, a size limit (``ulimit -f``), a
    read-only or unwritable directory. Names the file and what was being written."""

    #: what the machine said, in words (``no space left on device``)
    reason: str = ""


class RegistryError(ConfigError):
    """An unknown model, loss, candidate or method name."""


class TrainingDiverged(AutolossError):
    """The training loss or the parameters became NaN or infinite (names the step and the quantity)."""


class OutOfMemory(AutolossError):
    """The process could not allocate memory (its limit, ``ulimit -v``, or the machine's)."""


def out_of_memory(exc: BaseException) -> OutOfMemory | None:
    """``exc`` as one line when it is an allocation failure (``MemoryError``, PyTorch's CPU or
    CUDA allocator), else None."""
    text = str(exc)
    kinds = ("can't allocate memory", "CUDA out of memory", "Cannot allocate memory")
    if not (isinstance(exc, MemoryError) or any(k in text for k in kinds)):
        return None
    import re

    m = re.search(r"allocate (\d+) bytes", text)
    size = f" ({int(m.group(1)) / 2**20:,.1f} MiB at once)" if m else ""
    return OutOfMemory(
        f"out of memory{size}: the process's limit (ulimit -v) or the machine's is reached; "
        "a training run keeps its last checkpoint (rerun with --resume once memory is freed, or "
        "shard the embedding tables: docs/distributed.md)"
    )
