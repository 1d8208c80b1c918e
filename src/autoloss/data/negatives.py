"""Negative sampling for implicit feedback: for each interaction, items its user never had.

:func:`sample_negatives` draws, for every (user, item) row, ``n`` items uniformly from the
items of the catalogue that the user has no row with. A user's draws are made at once, without
replacement, so a user's negatives are distinct while the user has enough unseen items; a user
who needs more than there are gets every unseen item about equally often (whole random
permutations of them, then part of one); a user who has seen every item gets none (-1).

The k-th unseen item of a user is found without listing the unseen items: with the user's seen
items sorted, s_0 < s_1 < ..., it is ``k + #{j : s_j - j <= k}``. So memory is the rows and
the distinct (user, item) pairs, and time one small draw per user.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Negatives:
    """What :func:`sample_negatives` drew."""

    items: np.ndarray  # (rows, n) int32 item codes; -1: none (the user has seen every item)
    saturated_users: int  # users who have seen every item: their rows have no negatives
    repeating_users: int  # users with fewer unseen items than draws: some negatives repeat


def sample_negatives(
    users: np.ndarray, items: np.ndarray, num_items: int, n: int, rng: np.random.Generator
) -> Negatives:
    """``n`` unseen items per row of (``users``, ``items``), codes ``0..num_items-1``.

    A user's rows get their negatives in row order from one draw: row by row, ``n`` at a time.
    Deterministic for the generator's state and the rows (users are taken in code order).
    """
    users = np.asarray(users, dtype=np.int64)
    num_users = int(users.max()) + 1 if users.size else 0
    out = np.full((users.size, n), -1, dtype=np.int32)
    by_user = np.argsort(users, kind="stable")  # each user's rows, in row order
    row_bounds = np.searchsorted(users[by_user], np.arange(num_users + 1))
    seen = np.unique(users * num_items + np.asarray(items, dtype=np.int64))
    seen_bounds = np.searchsorted(seen, np.arange(num_users + 1) * num_items)
    saturated = repeating = 0
    for u in range(num_users):
        rows = by_user[row_bounds[u] : row_bounds[u + 1]]
        mine = seen[seen_bounds[u] : seen_bounds[u + 1]] - u * num_items  # sorted item codes
        free = num_items - mine.size
        need = rows.size * n
        if free == 0 or need == 0:
            saturated += int(free == 0 and need > 0)
            continue
        repeating += int(need > free)
        k = _draw(rng, free, need)
        drawn = k + np.searchsorted(mine - np.arange(mine.size), k, side="right")
        out[rows] = drawn.reshape(rows.size, n)
    return Negatives(out, saturated, repeating)


def _draw(rng: np.random.Generator, free: int, need: int) -> np.ndarray:
    """``need`` numbers in ``0..free-1``: distinct when ``need <= free``, else whole random
    permutations followed by part of one."""
    if need <= free:
        return rng.choice(free, size=need, replace=False)
    rounds = -(-need // free)
    return np.concatenate([rng.permutation(free) for _ in range(rounds)])[:need]
