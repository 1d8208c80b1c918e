"""Reading and writing the files the tool owns: atomic writes, digests, ``weights_only`` loads.

Every file is written to a temporary file beside its target and renamed over it, so a reader (or
a run killed mid-write) sees either the old file or the new one, never a partial one. Saved
weights are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, no
code from the file is ever executed.

**The machine's own faults** (no space left, a quota, ``ulimit -f``, a read-only or unwritable
directory: :data:`STORAGE_ERRNOS`) become one :class:`~autoloss.errors.StorageError` line naming
the file and what was being written; the temporary file is removed and the previous file, if
any, is intact (a failed write never replaces a good file).

**Digests.** Files that are read back as they were written (weights, checkpoints, ``result.json``)
get a sidecar ``NAME.sha256`` (JSON, :func:`digest_path`) with the SHA-256 and size of the file,
checked when it is read (:func:`verify_digest`): a flipped bit or a truncation is one line naming
the file, never used. The sidecar is written *before* the rename, listing the new digest and
the one(s) of the file it replaces, and rewritten with the new one alone after it: a kill at any
moment leaves a sidecar that accepts the file in place. A file without a sidecar (from an older
version, or copied alone) is read as before, unchecked.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from autoloss.errors import AutolossError, CheckpointError, ConfigError, StorageError

#: Temporary files are named ``.NAME.<random>.tmp`` beside their target.
TMP_SUFFIX = ".tmp"
#: The digest sidecar of ``NAME`` is ``NAME.sha256``.
DIGEST_SUFFIX = ".sha256"

#: A temporary file not modified for this long belongs to no live write (a directory that
#: other processes may write in: their writes keep their files fresh).
STALE_SECONDS = 600.0

#: Write errors that are the machine's, not a bug: space, quota, size limit, permissions.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the file size limit: ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


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


# ------------------------------------------------------------------------------- storage faults
def is_storage_error(exc: BaseException) -> bool:
    """Whether ``exc`` is an OSError of the machine's storage (:data:`STORAGE_ERRNOS`)."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_reason(exc: OSError) -> str:
    """``no space left on device`` and the like, for one line."""
    return STORAGE_ERRNOS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def storage_error(
    exc: OSError, path: str | Path, what: str | None = None, *, kept: bool = False
) -> StorageError:
    """The one-line error of a write of ``what`` (e.g. "the checkpoint") to ``path`` that the
    machine refused; ``kept``: the file it would have replaced is intact (said so)."""
    what = what or "it"
    text = f"cannot write {what}: {storage_reason(exc)}"
    if kept:
        noun = what[4:] if what.startswith("the ") else "file"
        text += f"; the previous {noun} is intact"
    err = StorageError(text, path=path)
    err.reason = storage_reason(exc)
    return err


@contextmanager
def writing(path: str | Path, what: str | None = None) -> Iterator[None]:
    """Turn a storage fault of the writes in the block (appending, copying, making directories:
    writers that cannot go through :func:`atomic_path`) into one :class:`StorageError` line."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, shutil.Error):  # copytree: a list of (src, dst, "[Errno N] ...")
            found = _ERRNO_TEXT.search(str(exc))
            if found is None or int(found.group(1)) not in STORAGE_ERRNOS:
                raise
            exc = OSError(int(found.group(1)), os.strerror(int(found.group(1))))
        if exc.errno not in STORAGE_ERRNOS:
            raise
        raise storage_error(exc, getattr(exc, "filename", None) or path, what) from None


_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


def make_dirs(path: str | Path, what: str | None = None) -> None:
    """``mkdir -p path``, a storage fault as one line."""
    with writing(path, what or "the directory"):
        Path(path).mkdir(parents=True, exist_ok=True)


def remove_stale_temporaries(
    directory: str | Path, *, min_age: float = 0.0, name: str | None = None
) -> int:
    """Remove the temporary files (``.NAME.<random>.tmp``) that writes killed mid-way left in
    ``directory`` (``name``: only those of that target), those not modified for ``min_age``
    seconds (a directory other processes write in too: a live write keeps its file fresh); how
    many. Quiet about what it cannot remove."""
    directory = Path(directory)
    now = time.time()
    n = 0
    pattern = f".{glob.escape(name)}.*{TMP_SUFFIX}" if name else f".*{TMP_SUFFIX}"
    try:
        found = list(directory.glob(pattern))
    except OSError:
        return 0
    for p in found:
        try:
            if min_age > 0 and now - p.lstat().st_mtime < min_age:
                continue
            if p.is_file() or p.is_symlink():
                p.unlink()
                n += 1
        except OSError:
            continue
    return n


def _nearest_existing(path: Path) -> Path | None:
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return None


def check_writable(out: str | Path, option: str = "--out", *, is_dir: bool = True) -> None:
    """ConfigError naming ``option`` when ``out`` (a directory, or a file where ``is_dir`` is
    false) cannot be written: it lies under a file, or the nearest directory that exists is
    read-only or not writable by this user. Checked before any work starts."""
    out = Path(out)
    check_creatable(out, option)
    here = _nearest_existing(out if is_dir else out.parent)
    if here is None or not here.is_dir():
        return  # check_creatable has said what is wrong, or nothing exists: mkdir will say
    if os.access(here, os.W_OK | os.X_OK):
        return
    try:
        read_only = bool(os.statvfs(here).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    reason = "is on a read-only file system" if read_only else "is not writable (permission denied)"
    where = "it" if here == out else str(here)
    raise ConfigError(f"cannot write there: {where} {reason}", path=out, column=option)


# --------------------------------------------------------------------------------------- digests
def digest_path(path: str | Path) -> Path:
    """The digest sidecar of ``path``: ``NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


#: (path, device, inode, size, mtime_ns) -> SHA-256: a file is hashed once per process.
_HASHED: dict[tuple[str, int, int, int, int], str] = {}


def _key(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int]:
    return (os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def file_sha256(path: str | Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a file, read in chunks; cached per process by the file's
    identity, size and modification time."""
    path = Path(path)
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        key = _key(path, st)
        hexdigest = _HASHED.get(key)
        if hexdigest is None:
            hexdigest = hashlib.file_digest(fh, "sha256").hexdigest()
            if len(_HASHED) > 4096:
                _HASHED.clear()
            _HASHED[key] = hexdigest
    return hexdigest, st.st_size


def _remember(path: Path, hexdigest: str) -> None:
    """Record the digest of a file just written (its reader in this process need not hash it)."""
    with contextlib.suppress(OSError):
        _HASHED[_key(path, path.stat())] = hexdigest


def _read_sidecar(path: Path) -> list[dict[str, Any]] | None:
    """The digests recorded for ``path`` (newest first), None without a sidecar; ValueError when
    the sidecar cannot be read as one."""
    side = digest_path(path)
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None
    entries = data.get("digests") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("no digests")
    ok = [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("sha256"), str)
        and isinstance(e.get("size"), int)
    ]
    if len(ok) != len(entries):
        raise ValueError("a malformed entry")
    return ok


def _sidecar_bytes(path: Path, entries: list[dict[str, Any]]) -> bytes:
    doc = {"file": path.name, "algorithm": "sha256", "digests": entries}
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


def _write_small(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; OSError as it comes (the caller says what)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, _file_mode())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def _current_digests(path: Path) -> list[dict[str, Any]]:
    """The digests that accept the file now at ``path`` (none when there is none): its sidecar's,
    or (no sidecar, or an unreadable one) the file's own, hashed now."""
    if not path.is_file():
        return []
    try:
        entries = _read_sidecar(path)
    except ValueError:
        entries = None
    if entries is not None:
        return entries
    hexdigest, size = file_sha256(path)
    return [{"sha256": hexdigest, "size": size}]


def _record_then_replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path`` with its digest recorded: the sidecar lists the new digest
    and the current file's before the rename, the new one alone after it (best effort: the
    two-entry sidecar accepts the new file too)."""
    hexdigest, size = file_sha256(tmp)
    new = {"sha256": hexdigest, "size": size}
    accepted = [new] + [e for e in _current_digests(path) if e["sha256"] != hexdigest]
    _write_small(digest_path(path), _sidecar_bytes(path, accepted))
    os.replace(tmp, path)
    _remember(path, hexdigest)
    if len(accepted) > 1:
        with contextlib.suppress(OSError):
            _write_small(digest_path(path), _sidecar_bytes(path, [new]))


def damaged_error(
    path: Path,
    what: str,
    recorded: dict[str, Any],
    found: tuple[str, int],
    hint: str | None,
    error: type[AutolossError] = CheckpointError,
) -> AutolossError:
    """The one line about a file whose digest differs from the one recorded at write time."""
    size = int(recorded["size"])
    if found[1] < size:
        text = (
            f"{what} is truncated: {found[1]:,} of the {size:,} bytes written "
            "(its SHA-256 differs from the one recorded when it was written)"
        )
    else:
        text = f"{what} is damaged: its SHA-256 differs from the one recorded when it was written"
        if found[1] != size:
            text += f" (and its size: {found[1]:,} bytes, {size:,} written)"
    return error(text + (f"; {hint}" if hint else ""), path=path)


def verify_digest(path: str | Path, what: str, hint: str | None = None) -> None:
    """CheckpointError (one line naming ``path``) when the file's SHA-256 is not one its sidecar
    recorded; nothing when it matches or when there is no sidecar (an older file: unchecked)."""
    path = Path(path)
    try:
        entries = _read_sidecar(path)
    except ValueError:
        side = digest_path(path)
        raise CheckpointError(
            f"cannot check {what}: its digest file {side.name} is damaged; remove {side} to "
            "read the file unchecked",
            path=path,
        ) from None
    if entries is None:
        return
    try:
        found = file_sha256(path)
    except FileNotFoundError:
        return  # the reader says that it is missing
    if any(e["sha256"] == found[0] for e in entries):
        return
    raise damaged_error(path, what, entries[0], found, hint)


def verify_recorded(
    path: str | Path,
    recorded: Any,
    what: str,
    hint: str | None = None,
    error: type[AutolossError] = CheckpointError,
) -> None:
    """``error`` (one line naming ``path``) when the file's SHA-256 differs from
    ``recorded`` (``{"sha256": HEX, "size": N}``, e.g. from a dataset's meta.json); nothing when
    it matches, when nothing usable is recorded or when the file is missing (its reader says)."""
    if not (
        isinstance(recorded, dict)
        and isinstance(recorded.get("sha256"), str)
        and isinstance(recorded.get("size"), int)
    ):
        return
    path = Path(path)
    try:
        found = file_sha256(path)
    except FileNotFoundError:
        return
    if found[0] != recorded["sha256"]:
        raise damaged_error(path, what, recorded, found, hint, error)


def remove_with_digest(path: str | Path) -> None:
    """Remove a file and its digest sidecar (either may be missing)."""
    path = Path(path)
    path.unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def read_verified_text(path: str | Path, what: str, hint: str | None = None) -> str:
    """The UTF-8 text of ``path``, its digest checked (:func:`verify_digest`)."""
    verify_digest(path, what, hint)
    return Path(path).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_path(
    path: str | Path, *, what: str | None = None, digest: bool = False
) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a path (``np.save``,
    ``pq.write_table``, ...); on success it is fsynced and renamed over ``path``, on failure
    removed. The file gets the mode a plain ``open(path, "w")`` would (``0o666`` less the
    umask), not ``mkstemp``'s 0600. A storage fault is one :class:`StorageError` line naming
    ``what`` was written (e.g. "the checkpoint"); ``digest``: record the file's digest in its
    sidecar (see the module doc)."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:  # a missing or read-only directory, a full disk: the user's to fix
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, path, what, kept=path.exists()) from None
        raise ConfigError(f"cannot write here ({exc.strerror or exc})", path=path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode())
        if digest:
            _record_then_replace(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in STORAGE_ERRNOS:
            raise storage_error(exc, path, what, kept=path.exists()) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_output(
    path: str | Path,
    mode: str = "wb",
    *,
    what: str | None = None,
    digest: bool = False,
    **open_kw: Any,
) -> Iterator[IO[Any]]:
    """An open file that becomes ``path`` atomically when the block ends without an error."""
    with atomic_path(path, what=what, digest=digest) as tmp, open(tmp, mode, **open_kw) as fh:
        yield fh


def _atomic_replace(path: Path, write: Any, what: str | None, digest: bool) -> None:
    with atomic_output(path, "wb", what=what, digest=digest) as fh:
        write(fh)


def check_creatable(out: Path, option: str = "--out") -> None:
    """ConfigError (naming ``option``) when ``out`` cannot be created because one of its parents
    is a file, not a directory."""
    for parent in Path(out).parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"cannot create it: {parent} is a file, not a directory",
                    path=out,
                    column=option,
                )
            break


def write_text(
    path: str | Path, text: str, *, what: str | None = None, digest: bool = False
) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``digest``: with its digest sidecar)."""
    _atomic_replace(Path(path), lambda fh: fh.write(text.encode("utf-8")), what, digest)


def save_state(obj: Any, path: str | Path, *, what: str | None = None) -> None:
    """``torch.save(obj)`` to ``path`` atomically (tensors and plain containers only), with its
    digest sidecar."""
    _atomic_replace(Path(path), lambda fh: _torch_save(obj, fh), what, True)


class _Recording:
    """A file that remembers the OSError of a failed write: torch's zip writer reports one as
    a RuntimeError ("unexpected pos ..."), which would hide a full disk."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _torch_save(obj: Any, fh: IO[bytes]) -> None:
    import torch

    rec = _Recording(fh)
    try:
        torch.save(obj, rec)  # type: ignore[arg-type]
    except Exception:
        if rec.error is not None:
            raise rec.error from None
        raise
    fh.flush()  # a full disk says so here, not when the file is closed


def load_state(path: Path, what: str, hint: str | None = None) -> Any:
    """The object saved at ``path`` (tensors and plain containers only: ``weights_only=True``).

    Raises CheckpointError naming ``what`` (e.g. "checkpoint", "controller file") when the file
    is missing, differs from the digest recorded when it was written (``hint``: what to do then)
    or cannot be read as such.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found", path=path)
    verify_digest(path, f"the {what}", hint)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for corrupt files
        raise CheckpointError(
            f"corrupt or unreadable {what} ({type(exc).__name__})" + (f"; {hint}" if hint else ""),
            path=path,
        ) from None
