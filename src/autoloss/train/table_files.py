"""The tables of a sharded run on disk: every process writes and reads its own shards
(``torch.distributed.checkpoint``), for the checkpoints (``RUN/checkpoint-tables/step-N``) and
beside ``model.pt`` (``RUN/model-tables``), where ``load_run`` reads them whole in one process.

A directory of shards is written into a temporary directory that rank 0 renames once every
process has written, and holds ``digests.json``: the SHA-256 and size of each of its files, each
process hashing the files it wrote. A reader checks the files it reads against it (a flipped bit
or a truncation is one line naming the file, as for ``checkpoint.pt``); a directory without it
is read unchecked.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from autoloss.errors import CheckpointError
from autoloss.files import file_sha256, verify_recorded, write_text
from autoloss.train.distributed import Context
from autoloss.train.sharded import split_state

#: The tables' checkpoints, beside checkpoint.pt: one directory per checkpoint, ``step-N``.
TABLES_DIR = "checkpoint-tables"  # RunDir.CHECKPOINT_TABLES
#: In each directory of shards: ``{"files": {NAME: {"sha256": HEX, "size": N}}}``.
DIGESTS = "digests.json"
#: DCP names a process's files ``__RANK_I.distcp``; the others (``.metadata``) are rank 0's.
_OWNER = re.compile(r"^__(?P<rank>\d+)_")


class _NotFrom(logging.Filter):
    """Drops the records logged from files under ``part``."""

    def __init__(self, part: str) -> None:
        super().__init__()
        self.part = part

    def filter(self, record: logging.LogRecord) -> bool:
        return self.part not in record.pathname


@contextmanager
def _dcp_logs_kept_out() -> Iterator[None]:
    """``torch.distributed.checkpoint`` logs on the *root* logger, with tracebacks, what it
    tries before it fails (a missing metadata file, then the rank's): the one-line error that
    follows says it all, so these stay out of the run's output while it reads or writes."""
    root = logging.getLogger()
    kept_out = _NotFrom(os.path.join("torch", "distributed", "checkpoint", ""))
    root.addFilter(kept_out)
    try:
        yield
    finally:
        root.removeFilter(kept_out)


# ---------------------------------------------------------------------------- writing
def save_tables(root: Path, step: int, state: dict[str, Any], ctx: Context) -> str:
    """Write the tables' ``state`` for the checkpoint of ``step`` (:func:`write_shards` into
    ``root/checkpoint-tables/step-STEP``); returns the directory's name (checkpoint.pt records
    it)."""
    name = f"step-{step}"
    write_shards(root / TABLES_DIR / name, state, ctx)
    return name


def write_shards(final: Path, state: dict[str, Any], ctx: Context) -> None:
    """``state`` (sharded tensors: each process writes its own shards) to the directory
    ``final`` through a temporary directory that rank 0 renames once every process has written."""
    import torch.distributed.checkpoint as dcp

    tmp = final.with_name(f".{final.name}.tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    with _dcp_logs_kept_out():
        dcp.save(state, checkpoint_id=str(tmp))
    dist.barrier()  # every file written: each process hashes its own
    digests: list[dict[str, Any]] = [{} for _ in range(ctx.world_size)]
    dist.all_gather_object(digests, _hash_own(tmp, ctx))
    if ctx.is_main:
        files = {k: v for part in digests for k, v in part.items()}
        write_text(tmp / DIGESTS, json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    dist.barrier()


def _owner(name: str) -> int:
    """The process that wrote (and hashes, and checks) the file ``name`` of a directory."""
    m = _OWNER.match(name)
    return int(m["rank"]) if m else 0


def _hash_own(where: Path, ctx: Context) -> dict[str, dict[str, Any]]:
    """``{NAME: {"sha256", "size"}}`` of the files of ``where`` that this process wrote."""
    out = {}
    for path in sorted(where.iterdir()):
        if path.is_file() and path.name != DIGESTS and _owner(path.name) == ctx.rank:
            hexdigest, size = file_sha256(path)
            out[path.name] = {"sha256": hexdigest, "size": size}
    return out


def prune_tables(root: Path, keep: str) -> None:
    """Remove the tables' checkpoints other than ``keep`` (after checkpoint.pt names it)."""
    for d in (root / TABLES_DIR).glob("*"):
        if d.name != keep:
            shutil.rmtree(d, ignore_errors=True)


def load_tables(root: Path, name: str, template: dict[str, Any]) -> dict[str, Any]:
    """``template`` (sharded tensors of this run's placement) filled from the checkpoint
    ``name``; a missing or damaged one is one line."""
    import torch.distributed.checkpoint as dcp

    where = root / TABLES_DIR / name
    hint = f"start the run again (autoloss train --out {root} --overwrite)"
    _agree_intact(where, "the sharded tables of the checkpoint", hint)
    wanted = _without_empty(template)
    try:
        with _dcp_logs_kept_out():
            dcp.load(wanted, checkpoint_id=str(where))
    except _unreadable() as exc:  # DCP wraps every reader's failure in its CheckpointException
        raise CheckpointError(
            f"the sharded tables of the checkpoint cannot be read ({_reason(exc)}): {hint}",
            path=where,
        ) from None
    _fill(template, wanted)
    return template


def _without_empty(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` without its empty dicts and lists, at any depth (the same tensors). They hold
    nothing, and a process that lacks some of the tables (every process of a run of several)
    makes DCP read an empty container as a value the checkpoint must have: no best weights
    before the first evaluation, no optimiser state on a process without a table."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            value = _without_empty(value)
        if not (isinstance(value, dict | list) and not value):
            out[key] = value
    return out


def _fill(state: dict[str, Any], loaded: dict[str, Any]) -> None:
    """Put what DCP loaded into ``loaded`` (:func:`_without_empty` of ``state``) back into
    ``state``: tensors were filled in place, other values replaced."""
    for key, value in loaded.items():
        if isinstance(value, dict) and isinstance(state.get(key), dict):
            _fill(state[key], value)
        else:
            state[key] = value


# ---------------------------------------------------------------------------- digests
def check_intact(where: Path, rank: int | None, what: str, hint: str) -> CheckpointError | None:
    """The one-line error about the first file of ``where`` that differs from what
    ``digests.json`` recorded (its SHA-256) or that is missing: only the files process ``rank``
    wrote (None: all of them). None when they match, or when nothing was recorded."""
    try:
        recorded = _recorded(where)
    except FileNotFoundError:
        return None  # no digests (or no directory: its reader says so)
    except (OSError, ValueError) as exc:
        text = f"cannot check {what}: the file is damaged ({type(exc).__name__}); {hint}"
        return CheckpointError(text, path=where / DIGESTS)
    for name, entry in sorted(recorded.items()):
        if rank is not None and _owner(name) != rank:
            continue
        if not (where / name).is_file():
            return CheckpointError(f"a file of {what} is missing; {hint}", path=where / name)
        try:
            verify_recorded(where / name, entry, f"this file of {what}", hint)
        except CheckpointError as error:
            return error
    return None


def _recorded(where: Path) -> dict[str, dict[str, Any]]:
    """The ``{NAME: {"sha256", "size"}}`` of ``where``'s ``digests.json``; ValueError when it
    is not one."""
    doc = json.loads((where / DIGESTS).read_text(encoding="utf-8"))
    files = doc.get("files") if isinstance(doc, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)
        for e in files.values()
    )
    if not ok:
        raise ValueError("not a digests file")
    return files  # type: ignore[return-value]


def _agree_intact(where: Path, what: str, hint: str) -> None:
    """Every process checks its own files (:func:`check_intact`); all raise the lowest rank's
    error if any found one, so that none goes on into the collective read alone."""
    error = check_intact(where, dist.get_rank(), what, hint)
    found: list[tuple[str, str | None] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(found, None if error is None else (error.message, error.path))
    first = next((e for e in found if e is not None), None)
    if first is not None:
        raise CheckpointError(first[0], path=first[1])


# ---------------------------------------------------------------------------- model.pt
#: Beside model.pt: the trained tables, each process's shards (``torch.distributed.checkpoint``).
MODEL_TABLES = "model-tables"
_TABLE_KEY = re.compile(
    r"^(?:(?P<path>.+)\.)?tables\.embedding_bags\.(?P<kind>[cb])(?P<i>\d+)\.weight$"
)


def save_model_tables(root: Path, model: nn.Module, ctx: Context) -> tuple[dict[str, Any], str]:
    """(model.pt's state: the replicated entries, the name of the directory beside it that holds
    the tables): every process writes its own tables; nothing is gathered."""
    state, tables = split_state(model.state_dict())
    write_shards(root / MODEL_TABLES, tables, ctx)
    assert state is not None
    return state, MODEL_TABLES


def load_model_tables(root: Path, name: str) -> dict[str, torch.Tensor]:
    """The tables a sharded run wrote (:func:`save_model_tables`), read whole in this process
    (no process group) and laid out as :class:`~autoloss.models.layers.FieldEmbedding` keeps
    them: each field's table in field order in one ``embedding.weight``, then a zero padding
    row."""

    where = root / name
    hint = f"train the run again (autoloss train --out {root} --overwrite)"
    what = "the sharded tables beside model.pt"
    if (error := check_intact(where, None, what, hint)) is not None:
        raise error
    try:
        full = _read_whole(where)
    except _unreadable() as exc:  # a missing or unreadable file
        raise CheckpointError(
            f"{what} cannot be read ({_reason(exc)}): {hint}", path=where
        ) from None
    grouped: dict[str, list[tuple[int, int, torch.Tensor]]] = {}
    for key, value in full.items():
        m = _TABLE_KEY.match(key)
        if m:
            order = (0 if m["kind"] == "c" else 1, int(m["i"]))
            grouped.setdefault(m["path"] or "", []).append((*order, value))
    out = {}
    for path, parts in grouped.items():
        rows = [t for _, _, t in sorted(parts, key=lambda p: p[:2])]
        pad = torch.zeros(1, rows[0].shape[1], dtype=rows[0].dtype)
        out[f"{path}.embedding.weight" if path else "embedding.weight"] = torch.cat([*rows, pad])
    return out


def _read_whole(where: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``torch.distributed.checkpoint`` directory, whole, in this process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = FileSystemReader(str(where)).read_metadata().state_dict_metadata
    warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single")
    full = {
        k: torch.empty(m.size, dtype=m.properties.dtype)
        for k, m in meta.items()
        if isinstance(m, TensorStorageMetadata)
    }
    with _dcp_logs_kept_out():
        dcp.load(full, checkpoint_id=str(where), no_dist=True)
    return full


def _reason(exc: BaseException) -> str:
    """The first line of why a ``torch.distributed.checkpoint`` read failed: the lowest rank's
    own error where DCP gathered them (its ``CheckpointException`` says only which ranks)."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict) and failures:
        first = failures[min(failures)]
        exc = first[0] if isinstance(first, tuple) and first else first
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unreadable() -> tuple[type[BaseException], ...]:
    """What reading a ``torch.distributed.checkpoint`` directory raises when it is missing or
    damaged (DCP's ``CheckpointException`` is a ``BaseException``)."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)
