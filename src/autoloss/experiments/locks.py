"""The per-run locks of an experiment directory: :mod:`autoloss.locks` (moved there so that the
train layer locks the run directories it writes). This name is that same module."""

from __future__ import annotations

import sys

import autoloss.locks as _locks
from autoloss.locks import (  # noqa: F401 - re-exported
    FOREIGN_LOCK_TIMEOUT_S,
    GUARD_NAME,
    GUARD_WAIT_S,
    LOCK_HEARTBEAT_S,
    LOCK_SUFFIX,
    UNREADABLE_LOCK_GRACE_S,
    RunLock,
    describe_holder,
    guard,
)

# One module under both names: setting ``autoloss.experiments.locks.LOCK_HEARTBEAT_S`` (a test)
# changes the lock's behaviour, as it did before the move.
sys.modules[__name__] = _locks
