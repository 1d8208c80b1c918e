"""Ray, for the commands that run their tasks on it (``prepare`` and ``compare`` with
``--executor ray``): importing it, and connecting to a cluster or starting a local instance.

Ray is optional (``pip install 'autoloss-rec[ray]'``): :func:`import_ray` says so in one line
when it is missing, and :func:`connect` says in one line that no cluster answered.
"""

from __future__ import annotations

import os
from typing import Any

from autoloss.errors import ConfigError

RAY_MISSING = "--executor ray needs Ray: pip install 'autoloss-rec[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def where(address: str | None) -> str:
    """The cluster ``address`` names, in words: itself, ``RAY_ADDRESS``, or a local instance."""
    return address or os.environ.get("RAY_ADDRESS") or "a local instance"


def is_local(address: str | None) -> bool:
    """True when :func:`connect` starts a local instance (no address, no ``RAY_ADDRESS``)."""
    return address is None and not os.environ.get("RAY_ADDRESS")


def connect(ray: Any, address: str | None) -> bool:
    """Initialise Ray unless it is (a test, a notebook): the cluster at ``address``, the one in
    ``RAY_ADDRESS``, or a new local instance without its dashboard. True when this call did
    (the caller shuts it down); a cluster that does not answer is one line."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False} if is_local(address) else {}
    try:
        ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, SystemExit) as exc:
        # (Ray exits the process, SystemExit, when it gives up waiting for a cluster)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, SystemExit):
            first = "no cluster answered"
        raise ConfigError(
            f"--executor ray: cannot start or reach Ray at {where(address)} ({first})"
        ) from None
    return True
