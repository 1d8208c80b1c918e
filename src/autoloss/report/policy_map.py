"""The controller's policy map: α over the candidates as a function of the prediction.

For a saved ``controller.pt`` the controller network is rebuilt (frozen, eval mode) and fed a grid
of predictions: binary, ŷ = P(y=1) in (0, 1) with y = 0 and y = 1; multi-class, for every true
class c, the probability of c on the grid and the remaining mass spread evenly over the other
classes. What comes out is the controller's α (before Gumbel noise).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GRID_POINTS = 99


class PolicyMapUnavailable(Exception):
    """The controller file cannot be turned into a policy map (reason in the message)."""


@dataclass
class PolicyMap:
    grid: np.ndarray  # (G,)
    alpha: dict[int, np.ndarray]  # true class -> (G, K)
    candidates: list[str]
    task: str
    spread: dict[int, np.ndarray] | None = None  # true class -> (G, K) std over controllers


def prediction_grid(points: int = GRID_POINTS) -> np.ndarray:
    return np.linspace(0.01, 0.99, points)


def grid_inputs(
    task: str, num_classes: int, true_class: int, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (G,) and predicted probabilities ((G,) binary, (G, C) multi-class) for one class."""
    y = np.full(len(grid), true_class, dtype=np.int64)
    if task == "binary":
        return y, grid.astype(np.float32)
    probs = np.repeat(((1 - grid) / (num_classes - 1))[:, None], num_classes, axis=1)
    probs[:, true_class] = grid
    return y, probs.astype(np.float32)


def compute_policy_map(path: Path, points: int = GRID_POINTS) -> PolicyMap:
    """Rebuild the controller saved at ``path`` and evaluate α on the prediction grid."""
    import torch

    from autoloss.errors import AutolossError
    from autoloss.policies.gumbel import DEFAULT_INPUTS, load_controller

    try:
        ctrl = load_controller(path)
    except AutolossError as exc:
        raise PolicyMapUnavailable(f"cannot load {path.name}: {exc}") from None
    if ctrl.inputs != DEFAULT_INPUTS:
        raise PolicyMapUnavailable(
            f"{path.name}: the controller also sees {', '.join(ctrl.inputs[2:])}, so α is not a "
            "function of the prediction alone"
        )
    task = str(ctrl.task)
    num_classes = int(ctrl.num_classes)
    grid = prediction_grid(points)
    alpha: dict[int, np.ndarray] = {}
    with torch.no_grad():
        for c in range(num_classes):
            y, probs = grid_inputs(task, num_classes, c, grid)
            a = ctrl.alpha(torch.from_numpy(y), torch.from_numpy(probs))
            alpha[c] = a.detach().cpu().double().numpy()
    return PolicyMap(grid, alpha, list(ctrl.candidates), task)


def average_maps(maps: Sequence[PolicyMap]) -> PolicyMap:
    """Mean α over several controllers (seeds), with their standard deviation as ``spread``."""
    if len(maps) == 1:
        return maps[0]
    first = maps[0]
    for m in maps[1:]:
        if (
            m.candidates != first.candidates
            or m.task != first.task
            or set(m.alpha) != set(first.alpha)
        ):
            raise PolicyMapUnavailable("the controllers of this cell differ in candidates or task")
    alpha = {c: np.mean([m.alpha[c] for m in maps], axis=0) for c in first.alpha}
    spread = {c: np.std([m.alpha[c] for m in maps], axis=0) for c in first.alpha}
    return PolicyMap(first.grid, alpha, first.candidates, first.task, spread)


# ---------------------------------------------------------------------------------- reading
#: A spread band (std of α across seeds) wider than this somewhere: the seeds disagree.
DISAGREEMENT_STD = 0.2
#: α within this of uniform (1/K) everywhere: the controller has learnt no preference.
UNIFORM_TOLERANCE = 0.05


@dataclass
class Favourite:
    """What a controller prefers for one true class: the candidate with the highest α averaged
    over the prediction grid, and where along the grid the top candidate changes."""

    true_class: int
    candidate: str
    alpha: float  # its mean α over the grid
    near_uniform: bool  # every α within UNIFORM_TOLERANCE of 1/K over the whole grid
    #: (candidate, first grid value, last grid value) of each run of the pointwise top candidate
    segments: list[tuple[str, float, float]]


def favourites(pm: PolicyMap) -> dict[int, Favourite]:
    """Per true class: the candidate the controller gives the most α (see :class:`Favourite`)."""
    out: dict[int, Favourite] = {}
    k = len(pm.candidates)
    for c, a in sorted(pm.alpha.items()):
        mean = a.mean(axis=0)
        best = int(np.argmax(mean))
        top = np.argmax(a, axis=1)
        segments: list[tuple[str, float, float]] = []
        for i, j in enumerate(top):
            name = pm.candidates[int(j)]
            if segments and segments[-1][0] == name:
                segments[-1] = (name, segments[-1][1], float(pm.grid[i]))
            else:
                segments.append((name, float(pm.grid[i]), float(pm.grid[i])))
        out[c] = Favourite(
            c,
            pm.candidates[best],
            float(mean[best]),
            bool(np.abs(a - 1.0 / k).max() < UNIFORM_TOLERANCE),
            segments,
        )
    return out


@dataclass
class Spread:
    """Where the controllers of several seeds differ most: the largest std of α across seeds."""

    std: float
    true_class: int
    candidate: str
    at: float  # the grid value (prediction) where it is reached


def widest_spread(pm: PolicyMap) -> Spread | None:
    """The largest spread of an averaged map (None for a single controller)."""
    if not pm.spread:
        return None
    best: Spread | None = None
    for c, s in pm.spread.items():
        g, k = np.unravel_index(int(np.argmax(s)), s.shape)
        if best is None or float(s[g, k]) > best.std:
            best = Spread(float(s[g, k]), c, pm.candidates[int(k)], float(pm.grid[int(g)]))
    return best
