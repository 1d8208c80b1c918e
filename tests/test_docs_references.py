"""No reference to a document outside the repository.

Code, tests and docs say what they mean, or link a page of this repository (``docs/...``), instead
of citing a specification section (``SPEC §4``), an issue number, a tracker, a ticket, a working
session, or files beside the checkout (``../shared/...``) that a clone does not have.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()

#: What is scanned: the package, tests, docs, benchmark scripts and the top-level files.
TREES = ("src", "tests", "docs", "benchmarks")
TOP_FILES = ("README.md", "CHANGELOG.md", "CONTRIBUTING.md", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".sh", ".txt", ".yaml", ".yml", ".toml", ".cfg", ".ini"}

OUTSIDE = re.compile(
    "|".join(
        [
            r"\bSPEC\b\s*§",  # SPEC §4
            r"\bSPEC's\b",
            r"\b(?:SPEC|STYLE)\.md\b",
            r"§\s*\d",  # §2 of some document
            r"(?i:\bissues?\s+#?\d+)",  # issue 10, Issue 13's, issues 10
            r"(?i:\bissue\s+tracker\b|\btracker\s+issues?\b)",  # not an experiment tracker
            r"(?i:\btickets?\b)",
            r"(?i:\b(?:this|that|same|one|earlier|previous|last|next|our|my)\s+session\b)",
            r"\.\./shared\b",  # a directory beside the checkout
        ]
    )
)


def _files() -> list[Path]:
    found = [ROOT / name for name in TOP_FILES if (ROOT / name).is_file()]
    for tree in TREES:
        found += [
            p for p in sorted((ROOT / tree).rglob("*")) if p.is_file() and p.suffix in SUFFIXES
        ]
    return [p for p in found if p.resolve() != THIS]


def _hits(text: str) -> list[str]:
    return [
        f"line {n}: {m.group(0)!r}: {line.strip()[:120]}"
        for n, line in enumerate(text.splitlines(), 1)
        for m in OUTSIDE.finditer(line)
    ]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_outside_the_repository(path: Path) -> None:
    hits = _hits(path.read_text(encoding="utf-8", errors="replace"))
    assert not hits, (
        f"{path.relative_to(ROOT)} refers to something a clone does not have; write what it "
        "says, or link the docs page that holds it:\n" + "\n".join(hits)
    )


@pytest.mark.parametrize(
    "text",
    [
        "see SPEC §4",
        "the SPEC's columns",
        "as ../shared/SPEC.md says",
        "Issue 10's rule",
        "issue #13",
        "raised on the issue tracker",
        "see the tracker issue",
        "ticket AL-12",
        "measured in one session",
        "an earlier session",
        "--frappe ../shared/data/frappe_x1",
    ],
)
def test_the_pattern_finds_an_outside_reference(text: str) -> None:
    assert _hits(text)


@pytest.mark.parametrize(
    "text",
    [
        "SPEC = FeatureSpec(cat_names=('a',), cat_vocab=(5,))",
        "build_model('deepfm', SPEC)",
        "REQUIRED_COLUMNS",
        "ort.InferenceSession(str(path)); session.run(None, feeds)",
        "start_new_session=True",
        "onnxruntime opens a session per model",
        "multiprocessing's resource tracker",
        "The tracker ``name`` for ``run_dir`` (MLflow, W&B)",
        "--data /shared/data/criteo",  # a cluster's shared file system in an example
        "docs/data.md, 'Frappe_x1'",
    ],
)
def test_the_pattern_leaves_ordinary_text_alone(text: str) -> None:
    assert not _hits(text)
