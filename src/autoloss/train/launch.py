"""``autoloss train --nproc N``: the ranks of one machine, launched through torchrun's own
launcher, their failures reported as one line (:mod:`autoloss.train.failures`)."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, NoReturn

from autoloss.errors import ConfigError
from autoloss.locks import _proc_stat
from autoloss.train.distributed import threads_per_rank
from autoloss.train.failures import REPORT_ENV, DistributedError, timeout_seconds


def launch_local(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m autoloss ARGV`` as ``nproc`` processes through ``torch.distributed.run``
    (a standalone rendezvous on this machine); returns 0, or raises the ranks' failure as one
    error (:func:`_report_failure`): a user error of the ranks, or which rank stopped answering
    (a stopped rank is killed at once rather than waited for)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    join = f"join_timeout={int(timeout_seconds())}"
    args = parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0",
         "--rdzv-conf", join, "-m", "autoloss", *argv]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="autoloss-ranks-") as reports:
        os.environ[REPORT_ENV] = reports
        done = threading.Event()
        watch = threading.Thread(target=_stop_stopped_ranks, args=(reports, done), daemon=True)
        watch.start()
        logging.disable(logging.ERROR)  # the agent's "failed (exitcode ...)": said in one line
        try:
            run(args)
        except ChildFailedError as exc:
            return _report_failure(reports, exc)
        finally:
            logging.disable(logging.NOTSET)
            done.set()
            watch.join()
            os.environ.pop(REPORT_ENV, None)
    return 0


def _stop_stopped_ranks(reports: str, done: threading.Event) -> None:
    """Once a rank has failed, kill the ranks that are stopped (SIGSTOP): the agent's SIGTERM
    would wait for them for 30 s. The others are stopped by the agent."""
    while not done.wait(0.2):
        if not any(Path(reports).glob("rank-*.error")):
            continue
        for f in Path(reports).glob("rank-*.pid"):
            with suppress(OSError, ValueError):
                pid = int(f.read_text())
                stat = _proc_stat(pid)
                if stat is not None and stat[0] in "Tt":
                    os.kill(pid, signal.SIGKILL)


def _report_failure(reports: str, exc: Any) -> NoReturn:
    """The ranks' failure as one error (printed once, by the command line): a rank's user error
    (ConfigError, exit 2) before a failed collective, else the lowest rank's; a rank that
    crashed without a one-line error is named with its exit code or signal."""
    errors: list[tuple[bool, int, str]] = []
    for f in Path(reports).glob("rank-*.error"):
        with suppress(OSError, ValueError):
            text, _, message = f.read_text().partition("\t")
            errors.append((int(text) != 2, int(f.stem.removeprefix("rank-")), message))
    if errors:  # a user error first (another rank's failure follows from it), then rank order
        collective, _, message = min(errors)
        raise (DistributedError(message) if collective else ConfigError(message))
    parts = []
    for rank, failure in sorted(exc.failures.items()):
        status = int(failure.exitcode)
        how = f"exited with {status}"
        if status < 0:
            with suppress(ValueError):
                how = f"was killed by {signal.Signals(-status).name}"
        parts.append(f"rank {rank} (pid {failure.pid}) {how}")
    raise DistributedError(
        f"{'; '.join(parts)} (its output is above); the run keeps its last checkpoint: "
        "rerun the command with --resume"
    )
