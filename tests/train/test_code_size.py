"""Size limits of the training core (``src/autoloss/train``): no class over
:data:`MAX_CLASS_LINES` lines, no function or method over :data:`MAX_FUNCTION_LINES`, measured
from the source with ``ast`` (a definition's first line, decorators included, to its last).

    python tests/train/test_code_size.py [DIR ...]    # the largest files, classes and functions
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TRAIN = Path(__file__).resolve().parents[2] / "src" / "autoloss" / "train"
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 50


@dataclass(frozen=True)
class Size:
    kind: str  # "file", "class" or "function"
    name: str  # path[:qualified.name]
    lines: int


def _span(node: ast.AST) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    return int(node.end_lineno) - first + 1  # type: ignore[attr-defined]


def measure(path: Path, root: Path) -> list[Size]:
    """The sizes of ``path`` itself and of every class and function in it (nested ones too)."""
    text = path.read_text(encoding="utf-8")
    rel = str(path.relative_to(root))
    out = [Size("file", rel, len(text.splitlines()))]

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                out.append(Size(kind, f"{rel}:{name}", _span(child)))
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(text), "")
    return out


def sizes(directory: Path) -> list[Size]:
    return [s for p in sorted(directory.rglob("*.py")) for s in measure(p, directory.parent)]


def test_no_class_over_the_limit() -> None:
    big = [s for s in sizes(TRAIN) if s.kind == "class" and s.lines > MAX_CLASS_LINES]
    assert not big, f"classes over {MAX_CLASS_LINES} lines: {big}"


@pytest.mark.parametrize("path", sorted(TRAIN.glob("*.py")), ids=lambda p: p.name)
def test_no_function_over_the_limit(path: Path) -> None:
    big = [
        s
        for s in measure(path, TRAIN.parent)
        if s.kind == "function" and s.lines > MAX_FUNCTION_LINES
    ]
    assert not big, f"functions over {MAX_FUNCTION_LINES} lines: {big}"


def main(argv: list[str]) -> None:
    for directory in [Path(a) for a in argv] or [TRAIN]:
        found = sizes(directory.resolve())
        print(f"# {directory}")
        for kind in ("file", "class", "function"):
            print(f"largest {kind}s:")
            for s in sorted((s for s in found if s.kind == kind), key=lambda s: -s.lines)[:6]:
                print(f"  {s.lines:5d}  {s.name}")


if __name__ == "__main__":
    main(sys.argv[1:])
