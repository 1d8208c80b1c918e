"""A benchmark's figures as a Markdown table: one row per dict, the columns in first-seen order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return "–" if value is None else str(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (empty string for no rows)."""
    if not rows:
        return ""
    cols: list[str] = []  # scalar figures only: lists and mappings stay in the JSON
    for row in rows:
        cols += [k for k, v in row.items() if k not in cols and not isinstance(v, list | dict)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines)
