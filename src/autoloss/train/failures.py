"""How a rank of a distributed run fails: in one line, printed once.

A collective that waits for a rank that stopped or died becomes a :class:`DistributedError`
naming that rank (:func:`collective_failure`); under the ``--nproc`` launcher each rank leaves its
pid and its one-line error in a directory the launcher reads (:data:`REPORT_ENV`), so the error is
printed once instead of by every rank.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from autoloss.errors import AutolossError, ConfigError, out_of_memory
from autoloss.locks import _proc_stat

#: Seconds a collective (and the process group's start) may wait for the other ranks.
TIMEOUT_ENV = "AUTOLOSS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
#: Set by the ``--nproc`` launcher (:func:`launch_local`) for its ranks: a directory where each
#: rank leaves its pid (``rank-R.pid``) and, when it fails, its one-line error (``rank-R.error``),
#: which the launcher prints once instead of every rank printing its own.
REPORT_ENV = "AUTOLOSS_RANK_REPORTS"


class DistributedError(AutolossError):
    """A distributed run stopped because a rank stopped answering or went away (one line)."""


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected seconds") from None
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected seconds > 0")
    return value


# ---------------------------------------------------------------------------------------------
# Failures: one line, printed once


def _reports() -> str:
    return os.environ.get(REPORT_ENV, "")


def announce() -> None:
    """Leave this rank's pid where the launcher and the other ranks find it."""
    if _reports():
        with suppress(OSError, KeyError, ValueError):
            rank = int(os.environ["RANK"])
            Path(_reports(), f"rank-{rank}.pid").write_text(str(os.getpid()))


def _peer_states() -> dict[int, tuple[int, str]]:
    """(pid, state) of every other rank that announced itself: "stopped", "gone" or "running"."""
    out: dict[int, tuple[int, str]] = {}
    me = int(os.environ.get("RANK", "-1"))
    files = Path(_reports()).glob("rank-*.pid") if _reports() else iter(())
    for f in files:
        with suppress(OSError, ValueError):
            rank, pid = int(f.stem.removeprefix("rank-")), int(f.read_text())
            if rank == me:
                continue
            stat = _proc_stat(pid)
            state = "gone" if stat is None or stat[0] in "ZX" else "running"
            out[rank] = (pid, "stopped" if stat is not None and stat[0] in "Tt" else state)
    return dict(sorted(out.items()))


def collective_failure(exc: BaseException) -> DistributedError | None:
    """A collective (or the process group's start) that failed because another rank stopped
    answering or went away, as one line naming that rank where it can be told; None for any
    other error."""
    if not isinstance(exc, RuntimeError):  # DistBackendError, DistNetworkError, gloo's errors
        return None
    text = str(exc)
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    lost = any(
        s in text
        for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                  "Connection refused", "Socket closed")
    )  # fmt: skip
    if not (timed_out or lost):
        return None
    me = os.environ.get("RANK", "?")
    peers = _peer_states()
    stopped = [f"rank {r} (pid {pid})" for r, (pid, st) in peers.items() if st == "stopped"]
    gone = [f"rank {r} (pid {pid})" for r, (pid, st) in peers.items() if st == "gone"]
    if stopped:
        who = f"{', '.join(stopped)} stopped answering: the process is stopped (SIGSTOP or Ctrl-Z)"
    elif gone:
        who = f"{', '.join(gone)} stopped answering: the process is gone"
    else:
        who = "another rank stopped answering" if timed_out else "another rank went away"
    waited = f" after {timeout_seconds():g}s ({TIMEOUT_ENV})" if timed_out else ""
    return DistributedError(
        f"{who}; rank {me} gave up waiting for it{waited}; the run keeps its last checkpoint: "
        "rerun the command with --resume"
    )


@contextmanager
def one_line_failures() -> Iterator[None]:
    """Around a rank's command: a failed collective becomes one line (:class:`DistributedError`)
    instead of gloo's traceback; under the ``--nproc`` launcher a rank's one-line error is left
    for the launcher to print once (the rank exits 2) instead of printed by every rank."""
    try:
        yield
    except Exception as exc:
        error = collective_failure(exc) or out_of_memory(exc) or exc
        if not isinstance(error, AutolossError):
            raise
        if _reports() and launched():
            with suppress(OSError, KeyError, ValueError):
                rank = int(os.environ["RANK"])
                code = 1 if isinstance(error, DistributedError) else 2
                tmp = Path(_reports(), f".rank-{rank}.tmp")
                tmp.write_text(f"{code}\t{error}")
                tmp.rename(Path(_reports(), f"rank-{rank}.error"))
                raise SystemExit(code) from None
        if error is exc:
            raise
        raise error from None
