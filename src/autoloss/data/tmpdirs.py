"""The temporary directories ``prepare`` builds a dataset in, and the removal of stale ones.

A dataset is built in ``.NAME.tmp-HOST-PID-HEX`` beside its target ``NAME`` and renamed onto it
at the end; an existing target being replaced is first renamed to ``.NAME.old-HOST-PID-HEX``.
The name carries its owner (host and process id), and ``.owner.json`` inside a build directory
also the process start time (so that a reused process id is told apart). A process killed
with ``kill -9`` leaves its directory behind: it is *stale* when its owner ran on this host and
is no longer alive. :func:`clean_stale` removes the stale directories of a target (the next
``prepare`` of that target does so before it starts; ``autoloss prepare --clean --out DIR``
does only that); a stale ``.old-`` directory whose target is missing is put back instead.
Directories of other hosts, or of live processes, are left alone. Names without a host
(``.NAME.tmp-PID-HEX``, from earlier versions) are taken to be of this host.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from autoloss.errors import ConfigError
from autoloss.files import write_text

OWNER_FILE = ".owner.json"
_NAME = re.compile(r"^(?:(?P<host>[A-Za-z0-9_.]+)-)?(?P<pid>\d+)-(?P<hex>[0-9a-f]{8})$")


def host_name() -> str:
    """This host's name as it appears in temporary names (no ``-`` or ``/``)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "localhost"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    except OSError:
        return False
    now = _start_time(pid)
    return started is None or now is None or now == started


def owned_name(out: Path, kind: str) -> Path:
    """A fresh ``.NAME.<kind>-HOST-PID-HEX`` path beside ``out`` (kind: ``tmp`` or ``old``)."""
    return out.parent / f".{out.name}.{kind}-{host_name()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def make_build_dir(out: Path) -> Path:
    """Create the temporary build directory of ``out``, with its owner file."""
    tmp = owned_name(out, "tmp")
    try:
        tmp.mkdir()
    except OSError as exc:
        raise ConfigError(
            f"cannot create a directory beside it ({(exc.strerror or str(exc)).lower()})",
            path=out,
            column="--out",
        ) from None
    owner = {"host": host_name(), "pid": os.getpid(), "started": _start_time(os.getpid())}
    try:
        write_text(tmp / OWNER_FILE, json.dumps(owner) + "\n", what="the owner file")
    except BaseException:  # a full disk: no empty build directory left behind
        remove(tmp)
        raise
    return tmp


def release_build_dir(tmp: Path) -> None:
    """Remove the owner file before the build directory becomes the dataset."""
    (tmp / OWNER_FILE).unlink(missing_ok=True)


def remove(path: Path) -> None:
    """Remove a file, a link or a directory tree (whatever ``path`` is), quietly."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


@dataclass
class Cleaned:
    """What :func:`clean_stale` did for one target."""

    removed: int = 0  # stale directories removed
    bytes: int = 0  # their size on disk
    restored: bool = False  # a stale ``.old-`` directory was put back as the target
    kept: int = 0  # temporary directories of live processes or other hosts, left alone

    def describe(self, out: Path) -> str:
        text = (
            f"removed {self.removed} stale temporary "
            f"{'directory' if self.removed == 1 else 'directories'} of {out} "
            f"({self.bytes / 1e6:,.1f} MB)"
        )
        if self.restored:
            text += f"; put back {out} from an interrupted --overwrite"
        if self.kept:
            text += f"; kept {self.kept} in use (a live process or another host)"
        return text


def _is_stale(path: Path, host: str | None, pid: int) -> bool:
    if host is not None and host != host_name():
        return False
    started = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        started = json.loads((path / OWNER_FILE).read_text(encoding="utf-8")).get("started")
    return not _alive(pid, started)


def clean_stale(out: Path) -> Cleaned:
    """Remove the stale temporary directories of the target ``out`` (see the module doc)."""
    out = Path(out)
    done = Cleaned()
    try:
        entries = list(out.parent.iterdir()) if out.parent.is_dir() else []
    except OSError:
        return done
    for kind in ("old", "tmp"):  # put back a replaced target before anything else
        prefix = f".{out.name}.{kind}-"
        for path in sorted(entries):
            if not path.name.startswith(prefix):
                continue
            m = _NAME.match(path.name[len(prefix) :])
            if m is None:
                continue
            if not _is_stale(path, m.group("host"), int(m.group("pid"))):
                done.kept += 1
                continue
            if kind == "old" and not (out.exists() or out.is_symlink()):
                try:
                    path.rename(out)
                    done.restored = True
                    continue
                except OSError:
                    pass
            size = _size(path)
            remove(path)
            if not (path.exists() or path.is_symlink()):
                done.removed += 1
                done.bytes += size
    return done
