"""Tables of an evidence grid: every method against CE, paired by seed, Holm-corrected.

Reads ``EXP_ROOT/<condition>-<variant>/runs/*/result.json`` (the layout
``autoloss compare --plan`` writes: ``OUT/<condition>-<experiment>``); for each condition, one table: test AUC (mean ± std), the paired
difference to ``ce`` of the same condition's ``methods`` grid (mean and 95% CI over seeds), the
paired t-test p and its Holm adjustment across the condition's methods, test logloss and test
logloss after temperature scaling (fitted on validation). Prints markdown.

    python benchmarks/evidence_table.py /tmp/evid

With ``--primary METHOD`` (a label of the table, e.g. ``reweight``), the pre-registered primary
family comes first for each condition: METHOD's test AUC against ``ce``, against the best fixed
loss of the condition (among the fixed losses of the ``methods`` variant, by mean *validation*
AUC over seeds; the test split never chooses it) and against ``ce [cemeta]`` (the control run by
the ``<condition>-cemeta`` variant), paired by seed, Holm over these three only, with a verdict
at Holm p < 0.05. Every other row of the full table is exploratory (Holm over those rows).
``--development COND`` (repeatable) prints COND apart, as the condition where hyper-parameters
were chosen; ``--json PATH`` writes the primary comparisons of each condition for a script.

    python benchmarks/evidence_table.py /tmp/evid --primary reweight --development ml \\
        --json /tmp/evid/primary.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from autoloss.experiments.tables import FIXED_LOSSES, fmt_p
from autoloss.files import write_text
from autoloss.metrics import holm, paired_ttest

Result = dict[str, Any]
#: seed -> that run's result.json
Runs = dict[int, Result]
#: label -> its runs (one condition)
Condition = dict[str, Runs]

REFERENCE = "ce"
#: The control: CE trained by the primary method's machinery (variant ``cemeta``).
CONTROL = "ce [cemeta]"
#: The labels the best fixed loss is chosen among (the ``methods`` variant's fixed losses).
FIXED_LABELS: tuple[str, ...] = (*FIXED_LOSSES, "uniform")
ALPHA = 0.05
PRIMARY_HEADING = "#### Primary comparisons (pre-registered)"
DEVELOPMENT_HEADING = (
    "## Development condition (hyper-parameters chosen here; not part of the evidence)"
)


def load(root: Path) -> dict[str, dict[str, dict[int, dict]]]:
    """condition -> label -> seed -> result."""
    out: dict[str, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for exp in sorted(p for p in root.iterdir() if p.is_dir()):
        cond, _, variant = exp.name.partition("-")
        for res in sorted((exp / "runs").glob("*/result.json")):
            r = json.loads(res.read_text())
            label = r["method"] if variant == "methods" else f"{r['method']} [{variant}]"
            out[cond][label][int(r["seed"])] = r
    return out


def ci95(d: np.ndarray) -> float:
    return float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))


# ---------------------------------------------------------------------------- primary family
@dataclass
class Comparison:
    """The primary method's test AUC minus ``against``'s, paired by seed: ``n`` pairs, their
    mean difference, the half-width of its 95% CI, the paired t-test p and its Holm adjustment
    over the primary family."""

    label: str
    method: str
    against: str
    n: int = 0
    mean: float = math.nan
    ci: float = math.nan
    p: float = math.nan
    holm_p: float = math.nan

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` (Holm p < 0.05), ``no difference``; ``missing`` without pairs,
        ``no test`` when the t-test cannot be made (under 2 pairs, no spread)."""
        if self.n == 0:
            return "missing"
        if math.isnan(self.holm_p):
            return "no test"
        if self.holm_p >= ALPHA:
            return "no difference"
        return "better" if self.mean > 0 else "worse"

    def as_json(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {
            "label": self.label,
            "against": self.against,
            "n": self.n,
            "mean_diff": num(self.mean),
            "ci95": num(self.ci),
            "p": num(self.p),
            "holm_p": num(self.holm_p),
            "verdict": self.verdict,
        }


@dataclass
class BestFixed:
    label: str
    valid_auc: float


@dataclass
class PrimaryFamily:
    """One condition's primary comparisons and the best fixed loss they used."""

    condition: str
    comparisons: list[Comparison]
    best: BestFixed | None

    def as_json(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {"label": self.best.label, "mean_valid_auc": self.best.valid_auc}
        return {
            "best_fixed_loss": best,
            "comparisons": [c.as_json() for c in self.comparisons],
        }


def _mean_valid(runs: Runs, metric: str) -> float:
    """Mean of ``result["valid"][metric]`` over the seeds that have a finite one (nan if none)."""
    vals = [float((r.get("valid") or {}).get(metric, math.nan)) for r in runs.values()]
    finite = [v for v in vals if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def best_fixed(runs: Condition) -> BestFixed | None:
    """Among :data:`FIXED_LABELS` present, the highest mean validation AUC (ties: the lower mean
    validation logloss, then the first in :data:`FIXED_LABELS`); None if none has one."""
    scored = []
    for label in FIXED_LABELS:
        if runs.get(label):
            auc, logloss = _mean_valid(runs[label], "auc"), _mean_valid(runs[label], "logloss")
            if not math.isnan(auc):
                scored.append((auc, -math.inf if math.isnan(logloss) else -logloss, label))
    if not scored:
        return None
    auc, _, label = max(scored, key=lambda t: t[:2])
    return BestFixed(label, auc)


def _test_auc(r: Result) -> float:
    return float((r.get("test") or {}).get("auc", math.nan))


def compare(runs: Condition, method: str, against: str | None, label: str) -> Comparison:
    """``method`` against ``against`` on test AUC, over the seeds both have (unpaired: n = 0)."""
    out = Comparison(label, method, against or "")
    a, b = runs.get(method) or {}, runs.get(against or "") or {}
    seeds = [s for s in sorted(set(a) & set(b)) if math.isfinite(_test_auc(a[s]) + _test_auc(b[s]))]
    if not seeds:
        return out
    x = np.array([_test_auc(a[s]) for s in seeds])
    z = np.array([_test_auc(b[s]) for s in seeds])
    out.n, out.mean = len(seeds), float(np.mean(x - z))
    out.ci = ci95(x - z) if len(seeds) > 1 else math.nan
    out.p = paired_ttest(x, z)[1]
    return out


def primary_family(cond: str, runs: Condition, primary: str) -> PrimaryFamily:
    """The three pre-registered comparisons of ``primary``: vs ``ce``, vs the best fixed loss
    (the same as vs ``ce`` when that is ``ce``, still one of the three) and vs ``ce [cemeta]``;
    Holm over the three (a missing one does not count)."""
    best = best_fixed(runs)
    what = best.label if best else "none"
    if best and best.label == REFERENCE:
        what += ": the same comparison as vs ce"
    comps = [
        compare(runs, primary, REFERENCE, f"{primary} vs {REFERENCE}"),
        compare(
            runs, primary, best.label if best else None, f"{primary} vs best fixed loss ({what})"
        ),
        compare(runs, primary, CONTROL, f"{primary} vs {CONTROL}"),
    ]
    for c, p in zip(comps, holm([c.p for c in comps])):
        c.holm_p = p
    return PrimaryFamily(cond, comps, best)


def _fmt_p(p: float) -> str:
    return "–" if math.isnan(p) else fmt_p(p)


def _fmt_diff(c: Comparison) -> str:
    if c.n == 0:
        return "–"
    return f"{c.mean:+.4f}" + ("" if math.isnan(c.ci) else f" ± {c.ci:.4f}")


def best_fixed_line(best: BestFixed | None) -> str:
    among = ", ".join(FIXED_LABELS)
    if best is None:
        return (
            f"Best fixed loss (by mean validation AUC, among {among}): none has a validation AUC."
        )
    return (
        f"Best fixed loss (by mean validation AUC, among {among}): {best.label}"
        f" (mean valid AUC {best.valid_auc:.4f})."
    )


def primary_table(family: PrimaryFamily) -> list[str]:
    out = [
        PRIMARY_HEADING,
        "",
        "| comparison | pairs | mean Δ test AUC (95% CI) | paired p | Holm p | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in family.comparisons:
        out.append(
            f"| {c.label} | {c.n} | {_fmt_diff(c)} | {_fmt_p(c.p)} | {_fmt_p(c.holm_p)}"
            f" | {c.verdict} |"
        )
    return [
        *out,
        "",
        "Holm over these three comparisons only (a missing one does not count); verdict at"
        f" Holm p < {ALPHA}: better / worse, else no difference.",
        "",
        best_fixed_line(family.best),
        "",
    ]


# ---------------------------------------------------------------------------- full table
def _row(label: str, by_seed: Runs, base: Runs) -> tuple[Any, ...]:
    """label, seeds, test AUC mean and std, Δ vs ``base`` and its CI, paired p, loglosses."""
    seeds = sorted(set(by_seed) & set(base))
    auc = np.array([by_seed[s]["test"]["auc"] for s in seeds])
    ref = np.array([base[s]["test"]["auc"] for s in seeds])
    d = auc - ref
    p = paired_ttest(auc, ref)[1] if label != "ce" else math.nan
    ll = np.mean([by_seed[s]["test"]["logloss"] for s in seeds])
    llts = np.mean([by_seed[s]["test"].get("logloss_ts", math.nan) for s in seeds])
    return (label, len(seeds), auc.mean(), auc.std(ddof=1), d.mean(), ci95(d), p, ll, llts)


def _name(label: str, primary: Comparison | None) -> str:
    if primary is None or label == REFERENCE:
        return label
    return f"{label} (primary)" if label == primary.method else f"{label} (exploratory)"


def full_rows(
    runs: dict[str, dict[int, dict]], primary: Comparison | None = None
) -> list[tuple[tuple[Any, ...], float]]:
    """Every label's :func:`_row` against ``ce`` with its Holm p: over every row; with
    ``primary`` (its comparison with ``ce``), over the exploratory rows only, the primary's row
    getting the primary family's."""
    base = runs["ce"]
    rows = [_row(label, by_seed, base) for label, by_seed in runs.items()]
    is_primary = [primary is not None and r[0] == primary.method for r in rows]
    adj = holm([math.nan if prim else r[6] for r, prim in zip(rows, is_primary)])
    if primary is not None:
        adj = [primary.holm_p if prim else a for a, prim in zip(adj, is_primary)]
    return list(zip(rows, adj))


def table(
    cond: str, runs: dict[str, dict[int, dict]], primary: Comparison | None = None
) -> list[str]:
    """Every label against ``ce`` (:func:`full_rows`); with ``primary``, every row but its and
    ``ce``'s marked exploratory."""
    out = [
        f"### {cond}",
        "",
        "| method | seeds | test AUC | Δ AUC vs ce (95% CI) | paired p | Holm p | test logloss | logloss (T-scaled) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (label, n, m, sd, dm, ci, p, ll, llts), pa in sorted(
        full_rows(runs, primary), key=lambda t: -t[0][2]
    ):
        delta = "–" if label == "ce" else f"{dm:+.4f} ± {ci:.4f}"
        fp = "–" if math.isnan(p) else f"{p:.3f}"
        fa = "–" if math.isnan(pa) else f"{pa:.3f}"
        bold = "**" if (not math.isnan(pa) and pa < 0.05) else ""
        out.append(
            f"| {_name(label, primary)} | {n} | {m:.4f} ± {sd:.4f} | {bold}{delta}{bold} | {fp} | {fa} | {ll:.4f} | {llts:.4f} |"
        )
    if primary is not None:
        out += [
            "",
            f"Holm p of the exploratory rows: over those rows only (each vs ce); {primary.method}'s:"
            " the primary family's.",
        ]
    return [*out, ""]


# ---------------------------------------------------------------------------- report
def condition_section(
    cond: str, runs: dict[str, dict[int, dict]], primary: str | None
) -> tuple[list[str], PrimaryFamily | None]:
    """One condition's markdown (the primary family first, with ``primary``) and its family."""
    if primary is None:
        return table(cond, runs), None
    family = primary_family(cond, runs, primary)
    lines = [f"### {cond}", "", *primary_table(family)]
    full = table(cond, runs, family.comparisons[0])
    return [*lines, "#### All methods vs ce", *full[1:]], family


def report(
    data: dict[str, dict[str, dict[int, dict]]],
    primary: str | None = None,
    development: Sequence[str] = (),
) -> tuple[list[str], list[PrimaryFamily], list[PrimaryFamily]]:
    """The markdown lines; the primary families of the evidence and development conditions."""
    lines: list[str] = []
    evidence: list[PrimaryFamily] = []
    dev: list[PrimaryFamily] = []
    for cond in (c for c in data if c not in development):
        section, family = condition_section(cond, data[cond], primary)
        lines += section
        evidence += [family] if family else []
    if development:
        lines += [DEVELOPMENT_HEADING, ""]
    for cond in development:
        if cond not in data:
            lines += [f"### {cond}", "", "No runs.", ""]
            continue
        section, family = condition_section(cond, data[cond], primary)
        lines += section
        dev += [family] if family else []
    return lines, evidence, dev


def primary_json(
    primary: str, evidence: Sequence[PrimaryFamily], development: Sequence[PrimaryFamily]
) -> dict[str, Any]:
    """What ``--json`` writes: per condition, the best fixed loss and the primary comparisons
    (development conditions apart, under ``development``)."""
    return {
        "primary": primary,
        "reference": REFERENCE,
        "control": CONTROL,
        "alpha": ALPHA,
        "conditions": {f.condition: f.as_json() for f in evidence},
        "development": {f.condition: f.as_json() for f in development},
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--primary", metavar="METHOD", help="the pre-registered primary method")
    ap.add_argument(
        "--development",
        metavar="COND",
        action="append",
        default=[],
        help="a condition where hyper-parameters were chosen (printed apart; repeatable)",
    )
    ap.add_argument("--json", type=Path, metavar="PATH", help="write the primary comparisons")
    args = ap.parse_args(argv)
    if args.json and not args.primary:
        ap.error("--json needs --primary")
    lines, evidence, dev = report(load(args.root), args.primary, args.development)
    print(f"<!-- machine: {platform.node()} {platform.processor()} -->")
    print("\n".join(lines))
    if args.json:
        text = json.dumps(primary_json(args.primary, evidence, dev), indent=2)
        write_text(args.json, text + "\n")


if __name__ == "__main__":
    main()
