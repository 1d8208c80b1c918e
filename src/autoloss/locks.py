"""Locks of run directories: one process writes a run (``train``, ``compare``, their workers).

A run directory ``R`` is locked by the process that writes it (``R.lock`` beside it, created with
``O_EXCL``, holding ``{pid, host, started, proc_start, token}``); another process is refused
(``train``: one line naming the holder, :func:`hold_run`) or skips the run and leaves it to the
holder (``compare``). A lock whose holder is gone (its PID is not alive on this host, or a reused
PID) is taken over; one from another host once it has not been refreshed for an hour (the holder
touches it every minute). Creating, taking over and releasing locks happen under a short
``flock`` on ``.guard`` in the directory holding the runs.

Within one process the lock of a run is re-entrant: ``compare`` locks a run and then calls the
training, which locks it again (the same lock, nothing written). A process started to write the
run for the holder (the ranks of ``train --nproc``, launched by the process holding the lock)
adopts it through :data:`INHERITED_ENV` (the holder's token): it writes under the holder's lock.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from autoloss.errors import ConfigError

#: A lock held on another host cannot be checked for liveness: it is taken over once its holder
#: has not refreshed it (its mtime, every :data:`LOCK_HEARTBEAT_S`) for this long.
FOREIGN_LOCK_TIMEOUT_S = 3600.0
LOCK_HEARTBEAT_S = 60.0
#: A lock file without readable contents (its creator died between creating and writing it).
UNREADABLE_LOCK_GRACE_S = 60.0
#: The most a process waits for the experiment's guard before going on without it.
GUARD_WAIT_S = 30.0
LOCK_SUFFIX = ".lock"
GUARD_NAME = ".guard"
_HOST = socket.gethostname()
#: Tokens (comma-separated) of locks a parent process holds for this one (``train --nproc``).
INHERITED_ENV = "AUTOLOSS_RUN_LOCKS"

#: The locks this process holds, by the lock file's real path (re-entrancy).
_HELD: dict[str, RunLock] = {}
_HELD_MUTEX = threading.Lock()


@contextmanager
def guard(runs_dir: Path, create: bool = True) -> Iterator[None]:
    """Serialise lock-file changes and table writes of the processes sharing ``runs_dir``.

    An ``flock`` on ``runs_dir/.guard`` (never deleted), held for milliseconds: the kernel releases
    it when its holder dies, so it can never be stale. Where there is no ``flock`` (not POSIX, a
    file system without locks) or after :data:`GUARD_WAIT_S`, the callers go on unguarded: the
    ``O_EXCL`` creation and the rename of a stale lock still let one process win. ``create``
    False: use the guard only where it exists (``train`` leaves no ``.guard`` beside a run of
    its own; in an experiment's ``runs/``, ``compare`` created it).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(runs_dir / GUARD_NAME, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except OSError:  # no runs directory (nothing to guard) or not writable
        yield
        return
    try:
        deadline = time.monotonic() + GUARD_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            except OSError:  # no locks on this file system
                break
        yield
    finally:
        os.close(fd)  # releases the flock


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, from /proc (Linux only)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int, proc_start: int | None) -> bool:
    """Whether the process ``pid`` that started at ``proc_start`` still runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    except OSError:  # pragma: no cover - e.g. not allowed to signal at all
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    if state in ("Z", "X"):  # exited, not yet reaped
        return False
    return proc_start is None or start == proc_start  # else: the pid was reused


def describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    started = info.get("started")
    when = (
        time.strftime(" since %H:%M:%S", time.localtime(started))
        if isinstance(started, (int, float))
        else ""
    )
    return f"pid {info.get('pid')} on {info.get('host')}{when}"


class RunLock:
    """``RUN_DIR.lock`` beside a run directory: the process training the run holds it.

    It is created with ``O_CREAT | O_EXCL`` (one process succeeds) and holds JSON ``{pid, host,
    started, proc_start, token}``. A lock is *stale* when its holder is gone: on this host, its pid
    is not alive (or is alive but started at another time: a reused pid); on another host, it has
    not been refreshed for :data:`FOREIGN_LOCK_TIMEOUT_S` (the holder touches it every
    :data:`LOCK_HEARTBEAT_S`). A stale lock is taken over: renamed to a name of this process's own
    (one rename of a given file succeeds), checked to be the file judged stale, removed, and
    created again with ``O_EXCL``. All of this happens under the experiment's guard
    (:func:`_guard`), so two processes taking over one stale lock are serialised and exactly one
    of them holds it afterwards.
    """

    def __init__(self, run_dir: Path, *, create_guard: bool = True) -> None:
        self.path = run_dir.with_name(run_dir.name + LOCK_SUFFIX)
        self.create_guard = create_guard
        self.token = ""
        #: How this process holds the lock: "own" (created it), "again" (this process already
        #: held it: re-entrant), "inherited" (the parent's, :data:`INHERITED_ENV`); "" not held.
        self.mode = ""
        #: The lock's contents when another process holds it (after a failed :meth:`acquire`).
        self.holder: dict[str, Any] | None = None
        #: Why a stale lock was taken over (empty when there was none).
        self.took_over = ""
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return bool(self.token)

    def acquire(self) -> bool:
        """Take the lock (taking over a stale one); False when a live process holds it.

        True at once when this process already holds it (re-entrant: released by the outer
        holder only), or when its holder started this process to write the run (inherited)."""
        key = os.path.realpath(self.path)
        with _HELD_MUTEX:
            outer = _HELD.get(key)
            if outer is not None and outer.held and outer._pid == os.getpid():
                self.token, self.mode = outer.token, "again"
                return True
        with guard(self.path.parent, create=self.create_guard):
            for _ in range(5):
                if self._create():
                    self._start_heartbeat()
                    return self._register(key, "own")
                info, mtime = self._read(self.path)
                if mtime is None:
                    continue  # released meanwhile: try again
                if info and str(info.get("token") or "-") in _inherited_tokens():
                    self.token = str(info["token"])
                    return self._register(key, "inherited")
                reason = _stale_reason(info, mtime)
                if reason is None:
                    self.holder = info or {}
                    return False
                if self._remove_stale(info):
                    self.took_over = f"{describe_holder(info)}: {reason}"
            self.holder = self._read(self.path)[0] or {}
            return False

    def release(self) -> None:
        """Remove the lock if this process still holds it (idempotent)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if not self.token:
            return
        with _HELD_MUTEX:
            if _HELD.get(os.path.realpath(self.path)) is self:
                del _HELD[os.path.realpath(self.path)]
        if self.mode == "own":
            with guard(self.path.parent, create=self.create_guard):
                info, _ = self._read(self.path)
                if info is not None and info.get("token") == self.token:
                    self.path.unlink(missing_ok=True)
        self.token, self.mode = "", ""

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------------ internals
    def _register(self, key: str, mode: str) -> bool:
        self.mode, self._pid = mode, os.getpid()
        with _HELD_MUTEX:
            _HELD[key] = self
        return True

    def _create(self) -> bool:
        token = secrets.token_hex(8)
        stat = _proc_stat(os.getpid())
        info = {
            "pid": os.getpid(),
            "host": _HOST,
            "started": time.time(),
            "proc_start": stat[1] if stat else None,
            "token": token,
        }
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        self.token = token
        return True

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, Any] | None, float | None]:
        """(contents or None when unreadable, mtime or None when the file is gone)."""
        try:
            mtime = path.stat().st_mtime
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None, None
        except OSError:
            return None, time.time()
        try:
            info = json.loads(text)
        except ValueError:
            return None, mtime
        return (info if isinstance(info, dict) else None), mtime

    def _remove_stale(self, judged: dict[str, Any] | None) -> bool:
        """Remove the stale lock judged from ``judged``; False when it was not that one."""
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False  # someone else removed it
        moved, _ = self._read(aside)
        if judged is not None and (moved or {}).get("token") != judged.get("token"):
            # Not the file judged stale (a fresh lock of another process): put it back.
            with suppress(OSError):
                os.link(aside, self.path)
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(LOCK_HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    return

        self._beat = threading.Thread(target=beat, name=f"lock {self.path.name}", daemon=True)
        self._beat.start()


def _inherited_tokens() -> set[str]:
    return {t for t in os.environ.get(INHERITED_ENV, "").split(",") if t}


def refusal(lock: RunLock, flag: str = "--out") -> str:
    """The one line that refuses to write a run another live process holds (``lock.holder``)."""
    run_dir = lock.path.with_name(lock.path.name.removesuffix(LOCK_SUFFIX))
    return (
        f"{flag} {run_dir}: this run is being written by {describe_holder(lock.holder)} "
        f"(lock file {lock.path}); wait for that process to finish, or stop it and rerun with "
        "--resume"
    )


def lock_run(run_dir: str | Path, flag: str = "--out") -> RunLock | str | None:
    """Lock the run directory ``run_dir`` for this process (creating its parent directories):
    the held lock, the one line that refuses the run (another live process holds it), or None
    when the lock file cannot be created (a directory that cannot be written: the run's own
    checks say so in their words)."""
    lock = RunLock(Path(run_dir), create_guard=False)
    try:
        lock.path.parent.mkdir(parents=True, exist_ok=True)
        if lock.acquire():
            return lock
    except OSError:
        return None
    return refusal(lock, flag)


@contextmanager
def hold_run(run_dir: str | Path, flag: str = "--out") -> Iterator[RunLock]:
    """:func:`lock_run` for the duration of a block; :class:`ConfigError` (one line naming the
    holder and what to do) when another live process holds the run. (A lock that cannot be
    created yields an unheld one: its ``token`` is empty.)"""
    lock = lock_run(run_dir, flag)
    if isinstance(lock, str):
        raise ConfigError(lock)
    if lock is None:  # cannot be created: nor can the run, which says why
        yield RunLock(Path(run_dir))
        return
    with lock:
        yield lock


def _stale_reason(info: dict[str, Any] | None, mtime: float) -> str | None:
    """Why a lock with ``info`` (None: unreadable) last touched at ``mtime`` is stale, or None."""
    age = time.time() - mtime
    if info is None:
        return f"unreadable for {age:.0f}s" if age > UNREADABLE_LOCK_GRACE_S else None
    if info.get("host") != _HOST:
        if age > FOREIGN_LOCK_TIMEOUT_S:
            return f"not refreshed for {age:.0f}s by another host"
        return None
    try:
        pid = int(info.get("pid", 0))
        start = info.get("proc_start")
        proc_start = int(start) if start is not None else None
    except (TypeError, ValueError):
        return "invalid contents"
    if pid == os.getpid():  # this process's own locks are re-entrant: never judged here
        return "left by an earlier process with this pid"
    if not _pid_alive(pid, proc_start):
        return "its process is gone"
    return None
