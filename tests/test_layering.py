"""Data flows one way: each sub-package imports only from the layers below it (and its own).

    errors, files, metrics, locks, yamlfile, logs, raycluster -> ops -> data -> models -> losses -> policies -> train
    -> experiments -> report -> commands, cli

``ops`` (the custom kernels, each with a switch back to PyTorch's own op) sits above the shared
bottom and below everything that computes: models, losses and policies take their kernels from
it.

Every ``import`` in src/autoloss is read from the source (function-local ones included; only
``if TYPE_CHECKING:`` blocks, which never run, are skipped), so a late import cannot hide a
circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "autoloss"
LAYERS = [
    {"errors", "files", "metrics", "locks", "yamlfile", "logs", "raycluster"},
    {"ops"},
    {"data"},
    {"models"},
    {"losses"},
    {"policies"},
    {"train"},
    {"experiments"},
    {"report"},
    {"commands", "cli", "__main__"},
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str | None:
    """The top-level part of ``autoloss.X...`` (None for the package itself or other packages)."""
    parts = module.split(".")
    if parts[0] != "autoloss" or len(parts) < 2:
        return None
    return parts[1]


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "autoloss":  # from autoloss import models (not __version__)
                subs = [a.name for a in node.names if a.name in RANK]
                found.extend((node.lineno, f"autoloss.{name}") for name in subs)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE
    )


def test_every_module_belongs_to_a_layer() -> None:
    parts = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in _modules()}
    assert parts <= set(RANK), f"place these in LAYERS: {sorted(parts - set(RANK))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_from_layers_below(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    bad = []
    for line, module in _imports(tree):
        part = _part(module)
        if part is not None and part != own and RANK[part] > RANK[own]:
            bad.append(f"line {line}: {module} (layer {RANK[part]} above {own}, layer {RANK[own]})")
    assert not bad, "\n".join(bad)


def test_the_walker_sees_a_function_local_upward_import(tmp_path: Path) -> None:
    src = "def f():\n    from autoloss.train.trainer import Trainer\n"
    assert (2, "autoloss.train.trainer") in _imports(ast.parse(src))
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import autoloss.report\n"
    assert all(m != "autoloss.report" for _, m in _imports(ast.parse(guarded)))
