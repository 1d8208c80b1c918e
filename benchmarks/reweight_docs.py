"""Regenerate the tables of docs/results.md's "Per-example weights" section from the evidence.

    python benchmarks/reweight_docs.py exp/rw exp/rw-dev [--docs docs/results.md]

runs benchmarks/evidence_table.py on the main grid (``--primary reweight``, also writing
benchmarks/reweight_primary.json) and on the development grid (``--primary "reweight
[ceevery7]"``), gives each condition its title and replaces the text between the
``<!-- reweight-tables -->`` markers. Nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
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
START, END = "<!-- reweight-tables -->", "<!-- /reweight-tables -->"


def tables(root: Path, primary: str, *extra: str) -> str:
    cmd = [sys.executable, str(HERE / "evidence_table.py"), str(root), "--primary", primary]
    text = subprocess.run([*cmd, *extra], check=True, capture_output=True, text=True).stdout
    out = []
    for line in text.splitlines():
        if line.startswith("<!-- machine"):
            continue
        m = re.fullmatch(r"### (\S+)", line)
        if m:
            line = f"#### {TITLES.get(m.group(1), m.group(1))}"
        elif line in ("#### Primary comparisons (pre-registered)", "#### All methods vs ce"):
            line = line[5:] + ":"
        out.append(line)
    return "\n".join(out).strip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("main", type=Path)
    ap.add_argument("dev", type=Path)
    ap.add_argument("--docs", type=Path, default=HERE.parent / "docs" / "results.md")
    args = ap.parse_args()
    body = tables(args.main, "reweight", "--json", str(HERE / "reweight_primary.json"))
    body += "\n" + tables(args.dev, "reweight [ceevery7]")
    doc = args.docs.read_text()
    a, b = doc.index(START) + len(START), doc.index(END)
    args.docs.write_text(doc[:a] + "\n" + body + doc[b:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
