"""Reading saved weights safely: ``torch.load(weights_only=True)`` only, one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from autoloss.errors import CheckpointError


def load_state(path: Path, what: str) -> Any:
    """The object saved at ``path`` (tensors and plain containers only: ``weights_only=True``).

    Raises CheckpointError naming ``what`` (e.g. "checkpoint", "controller file") when the file
    is missing or cannot be read as such.
    """
    if not path.is_file():
        raise CheckpointError(f"{what} not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for corrupt files
        raise CheckpointError(
            f"corrupt or unreadable {what} ({type(exc).__name__})", path=path
        ) from None
