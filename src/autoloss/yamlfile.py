"""Reading YAML the user gives (config files, schemas, grids, ``--set`` values) within bounds.

``yaml.safe_load`` executes no code, but two shapes of a small file still hurt: nesting thousands
deep (the composer recurses: a ``RecursionError``) and aliases that refer to aliases (the
"billion laughs": a few hundred bytes that expand to billions of nodes when the settings are
read). :func:`load` composes the document, measures its depth and its size with every alias
expanded, and refuses both with one :class:`~autoloss.errors.ConfigError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import ConfigError

#: Deepest nesting accepted (a run's config.yaml is 3 deep; a schema 4).
MAX_DEPTH = 64
#: Most nodes accepted, every alias expanded (a grid of a few hundred runs is a few thousand).
MAX_NODES = 1_000_000

_RAISE = object()


def load(
    text: str, *, path: str | Path | None = None, what: str = "YAML", invalid: Any = _RAISE
) -> Any:
    """The Python value of the YAML ``text`` (safe types only); ConfigError naming ``path``
    for invalid YAML (or ``invalid`` returned, when given), nesting deeper than
    :data:`MAX_DEPTH` or more than :data:`MAX_NODES` nodes with aliases expanded."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError(
            f"{what} nested too deeply (at most {MAX_DEPTH} levels)", path=path
        ) from None
    except yaml.YAMLError as exc:
        if invalid is not _RAISE:
            return invalid
        raise ConfigError(f"not valid YAML: {str(exc).splitlines()[0]}", path=path) from None
    if node is None:
        return None
    depth, nodes = _measure(node)
    if depth > MAX_DEPTH:
        raise ConfigError(
            f"{what} nested too deeply ({depth} levels, at most {MAX_DEPTH})", path=path
        )
    if nodes > MAX_NODES:
        raise ConfigError(
            f"{what} too large once its aliases are expanded ({nodes:.3g} values, at most "
            f"{MAX_NODES:,}): aliases referring to aliases?",
            path=path,
        )
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        if invalid is not _RAISE:
            return invalid
        raise ConfigError(f"not valid YAML: {str(exc).splitlines()[0]}", path=path) from None
    finally:
        loader.dispose()


def _measure(root: yaml.Node) -> tuple[int, int]:
    """(depth, number of nodes with aliases expanded) of a composed document, without
    recursion; a shared (aliased) node is measured once and counted at every use."""
    memo: dict[int, tuple[int, int]] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in memo:
            continue
        children = _children(node)
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in memo)
            if len(stack) > 4 * MAX_NODES:  # a document too wide to measure
                return 0, len(stack)
            continue
        if any(id(c) not in memo for c in children):  # a cycle (a recursive alias)
            memo[id(node)] = (MAX_DEPTH + 1, 1)
            continue
        sub = [memo[id(c)] for c in children]
        memo[id(node)] = (1 + max((d for d, _ in sub), default=0), 1 + sum(n for _, n in sub))
    return memo[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
