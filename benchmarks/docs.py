"""Regenerate the tables of docs/results.md from the grids' results: nothing is pasted by hand.

    python -m benchmarks.docs results --root exp [--docs docs/results.md] [--check]

Every table of results.md sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->``;
:data:`TABLES` says which plan file (``benchmarks/grids/``) makes its grid, where the grid's
results are (``ROOT/<out>``: ``autoloss compare --plan PLAN --out ROOT/<out>``) and how the table
is made from them: ``evidence`` (``benchmarks/evidence_table.py``: every method against CE,
paired by seed, Holm-corrected; with ``primary``, the pre-registered family first) or
``compare`` (the grid's own ``table.md``, ``autoloss.experiments.tables``). A table whose
results are not under ROOT is kept as it is (reported as kept); one whose results are there is
replaced, with a line naming its command and the date of its latest run. ``--check`` writes
nothing and exits 1 when the file would change.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import evidence_table  # noqa: E402
from autoloss.files import write_text  # noqa: E402

#: condition -> the heading its table gets
TITLES = {
    "clean": "Frappe_x1, clean labels (DeepFM)",
    "implicit": "ml-latest-small implicit feedback, natural noise, clean validation (DeepFM)",
    "ipnnimplicit": "ml-latest-small implicit feedback, natural noise, clean validation (IPNN)",
    "ipnnmlsym30": "ml-latest-small, 30% symmetric noise on train, clean validation (IPNN)",
    "mlclean": "ml-latest-small, clean labels (DeepFM)",
    "mlp2n30": "ml-latest-small, 30% missed clicks on train, clean validation (DeepFM)",
    "mlsym30": "ml-latest-small, 30% symmetric noise on train, clean validation (DeepFM)",
    "p2n30": "Frappe_x1, 30% missed clicks on train, clean validation (DeepFM)",
    "pos05": "Frappe_x1, positive rate 5% (DeepFM)",
    "sym20": "Frappe_x1, 20% symmetric noise on train, clean validation (DeepFM)",
    "sym40": "Frappe_x1, 40% symmetric noise on train, clean validation (DeepFM)",
    "temporal": "ml-latest-small, temporal split (DeepFM)",
    "dev": "Development condition: Frappe_x1, 30% symmetric noise, clean validation "
    "(3 seeds; hyper-parameters chosen here)",
}


@dataclass(frozen=True)
class Table:
    name: str
    plan: str
    out: str
    kind: str = "evidence"
    #: evidence: the conditions shown, in this order (all of the grid when empty)
    conditions: tuple[str, ...] = ()
    primary: str | None = None
    #: evidence with a primary method: where its primary comparisons are written (JSON)
    json: str | None = None
    #: headings of the conditions: TITLES, else the condition's name
    titled: bool = False

    def command(self, root: str) -> str:
        return f"autoloss compare --plan benchmarks/grids/{self.plan} --out {root}/{self.out}"


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("paper-ml-binary", "paper-ml-binary.yaml", "paper-ml-binary", "compare"),
        Table("paper-ml-multiclass", "paper-ml-multiclass.yaml", "paper-ml-multiclass", "compare"),
        Table("paper-frappe", "paper-frappe.yaml", "paper-frappe", "compare"),
        Table("evidence-ml", "evidence-ml.yaml", "evidence-ml"),
        Table("evidence-frappe", "evidence-frappe.yaml", "evidence-frappe"),
        Table("controller-cost", "controller-cost.yaml", "controller-cost"),
        Table("ml-protocols", "ml-protocols.yaml", "ml-protocols"),
        Table(
            "reweight",
            "reweight.yaml",
            "rw",
            primary="reweight",
            json="reweight_primary.json",
            titled=True,
        ),
        Table(
            "reweight-dev",
            "reweight-dev.yaml",
            "rw-dev",
            primary="reweight [ceevery7]",
            titled=True,
        ),
    )
}

#: ``<!-- table:NAME -->`` or ``<!-- table:NAME:COND,... -->`` (those conditions of NAME only)
MARK = re.compile(
    r"<!-- table:(?P<name>[\w-]+(?::[\w,-]+)?) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->", re.S
)
REPO = HERE.parent
SOURCE = re.compile(r"^<!-- generated: .* -->\n", re.M)


def latest_run(root: Path) -> str:
    """The date (UTC) of the newest result.json under ``root``."""
    stamps = [p.stat().st_mtime for p in root.glob("**/runs/*/result.json")]
    if not stamps:
        return "-"
    return datetime.datetime.fromtimestamp(max(stamps), datetime.UTC).date().isoformat()


def evidence_tables(table: Table, root: Path) -> str:
    data = evidence_table.load(root)
    if table.conditions:
        data = {c: data[c] for c in table.conditions if c in data}
    lines, evidence, dev = evidence_table.report(data, table.primary)
    if table.json and table.primary:
        text = json.dumps(evidence_table.primary_json(table.primary, evidence, dev), indent=2)
        write_text(HERE / table.json, text + "\n")
    out = []
    for line in lines:
        m = re.fullmatch(r"### (\S+)", line)
        if m and len(table.conditions) == 1:  # one condition: the page's own heading names it
            continue
        if m:
            cond = m.group(1)
            line = f"#### {TITLES.get(cond, cond) if table.titled else cond}"
        elif line in ("#### Primary comparisons (pre-registered)", "#### All methods vs ce"):
            line = line[5:] + ":"
        out.append(line)
    return "\n".join(out).strip() + "\n"


def compare_table(root: Path) -> str:
    """The grid's table.md (written by compare), its headings under the section's."""
    grids = sorted(p for p in root.glob("*/table.md"))
    parts = []
    for path in grids:
        text = path.read_text(encoding="utf-8").replace(f"{REPO}/", "")  # paths of this clone
        for line in text.splitlines():
            if line.startswith("# "):
                continue
            parts.append("#" * 2 + line if line.startswith("## ") else line)
    return "\n".join(parts).strip() + "\n"


def finished(table: Table, where: Path) -> bool:
    """Whether every grid of the table's plan has finished under ``where`` (compare writes a
    grid's table.md once all its runs have): a plan still running keeps its old tables."""
    from autoloss.experiments.plan import load_plan, plan_runs

    grids = plan_runs(load_plan(HERE / "grids" / table.plan), where)
    return all((where / g.name / "table.md").is_file() for g in grids)


def generate(table: Table, root: Path) -> str | None:
    """The section's new text, or None when the grid's results are not under ``root``."""
    where = root / table.out
    if not any(where.glob("*/runs/*/result.json")) or not finished(table, where):
        return None
    body = evidence_tables(table, where) if table.kind == "evidence" else compare_table(where)
    source = (
        f"<!-- generated: `{table.command(str(root))}`, then "
        f"`python -m benchmarks.docs results --root {root}`; latest run {latest_run(where)} -->\n"
    )
    return source + body


def regenerate(text: str, root: Path) -> tuple[str, list[str], list[str]]:
    """``text`` with every marked table whose results exist replaced; (text, done, kept)."""
    done: list[str] = []
    kept: list[str] = []

    def replace(m: re.Match[str]) -> str:
        name = m.group("name")
        base, _, conds = name.partition(":")
        if base not in TABLES:
            raise SystemExit(
                f"benchmarks.docs: unknown table {base!r} (known: {', '.join(TABLES)})"
            )
        table = TABLES[base]
        if conds:
            table = dataclasses.replace(table, conditions=tuple(conds.split(",")))
        body = generate(table, root)
        if body is None:
            kept.append(name)
            return m.group(0)
        done.append(name)
        return f"<!-- table:{name} -->\n{body}<!-- /table:{name} -->"

    return MARK.sub(replace, text), done, kept


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.docs", description=(__doc__ or "").splitlines()[0]
    )
    ap.add_argument("page", choices=("results",), help="the page to regenerate")
    ap.add_argument("--root", type=Path, default=Path("exp"), help="where the grids ran (exp)")
    ap.add_argument("--docs", type=Path, default=HERE.parent / "docs" / "results.md")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 on a change")
    args = ap.parse_args(argv)
    text = args.docs.read_text(encoding="utf-8")
    new, done, kept = regenerate(text, args.root)
    print(f"regenerated: {', '.join(done) or 'none'}")
    print(f"kept (no results under {args.root}): {', '.join(kept) or 'none'}")
    if args.check:
        return int(new != text)
    if new != text:
        write_text(args.docs, new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
