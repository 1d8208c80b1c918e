"""``python -m benchmarks.docs results``: marked tables whose grids ran are replaced, the others
kept; unknown markers are refused; the tables of docs/results.md are all marked."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import docs  # noqa: E402


def test_tables_without_results_are_kept_and_unknown_ones_refused(tmp_path: Path) -> None:
    text = (
        "# t\n\n<!-- table:evidence-ml:clean -->\n| a |\n|---|\n<!-- /table:evidence-ml:clean -->\n"
    )
    new, done, kept = docs.regenerate(text, tmp_path)
    assert (new, done, kept) == (text, [], ["evidence-ml:clean"])
    with pytest.raises(SystemExit, match="unknown table 'nope'"):
        docs.regenerate("<!-- table:nope -->\nx\n<!-- /table:nope -->", tmp_path)


def test_every_table_of_the_results_page_is_marked_and_known(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "results.md").read_text()
    names = [m.group("name") for m in docs.MARK.finditer(text)]
    assert {n.partition(":")[0] for n in names} == set(docs.TABLES)
    inside = "".join(m.group(0) for m in docs.MARK.finditer(text))
    headers = [
        line
        for line in text.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in ("model", "method")
    ]
    assert headers and all(h in inside for h in headers)  # every results table is generated
    for table in docs.TABLES.values():
        assert (ROOT / "benchmarks" / "grids" / table.plan).is_file()


def test_a_plan_still_running_keeps_its_tables(tmp_path: Path) -> None:
    """A finished grid has a table.md; until every grid of the plan has one, nothing changes."""
    text = "<!-- table:paper-ml-binary -->\nold\n<!-- /table:paper-ml-binary -->\n"
    grid = tmp_path / "paper-ml-binary" / "paper"
    (grid / "runs" / "deepfm-ce-s2021").mkdir(parents=True)
    (grid / "runs" / "deepfm-ce-s2021" / "result.json").write_text("{}")
    assert docs.regenerate(text, tmp_path)[0] == text  # running: no table.md yet
    (grid / "table.md").write_text(f"# grid\n\n- data: `{ROOT}/exp/d`\n\n| model | ce |\n")
    new, done, _ = docs.regenerate(text, tmp_path)
    assert done == ["paper-ml-binary"] and "- data: `exp/d`" in new and "old" not in new
