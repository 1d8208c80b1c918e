"""Results of an experiment as rows, summary statistics, t-tests and markdown tables.

``results.csv`` holds one row per finished run (:data:`RESULT_COLUMNS`: the required columns first,
then extras; with conditions, ``condition`` and a column per grid key last). :func:`summarize`
groups the rows by model × method and computes mean, sample standard deviation (ddof = 1) and
two-sided Welch t-tests of each method against ``ce`` and against the *best fixed loss*
(:func:`best_baseline`: among the fixed methods, never a learnt one, the one with the highest mean
*validation* AUC for that model; the test split never chooses it).

:func:`paired_differences` pairs each method's runs with the baseline's (``ce``, else the first
method) by seed: runs of one seed share initialisation, data order and label noise, so the
per-seed difference of test AUC removes what the seed does to both. It reports the mean
difference with its 95% confidence interval, the paired t-test and Welch's, each also Holm-adjusted
over every comparison of the table. :func:`render_markdown` turns a summary into ``table.md``;
:func:`render_grid_markdown` does so for an experiment with conditions (a summary table across
conditions, then the tables of each condition).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.errors import DataError
from autoloss.files import atomic_output
from autoloss.metrics import holm, paired_ttest, welch_ttest
from autoloss.train.result import RunResult

#: The columns every ``results.csv`` has, first and in this order (``read_results_csv`` needs them).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "model",
    "method",
    "seed",
    "test_auc",
    "test_logloss",
    "valid_auc",
    "valid_logloss",
    "best_epoch",
    "train_seconds",
    "train_rows_per_second",
)
#: Extra columns written after the required ones.
EXTRA_COLUMNS: tuple[str, ...] = (
    "epochs",
    "steps",
    "train_rows",
    "search_seconds",
    "task",
    "run_dir",
)
RESULT_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + EXTRA_COLUMNS

#: Methods that are AutoLoss itself (the product, which reports single out).
AUTOLOSS_METHODS: frozenset[str] = frozenset({"autoloss", "autoloss-soft"})
#: Methods that learn their loss weighting while training: never "the best fixed loss". Every
#: other method is fixed: a single loss (:data:`FIXED_LOSSES`), ``uniform``, ``weights:a,b,...``
#: or ``search`` (fixed weights found by an outer loop of trainings).
LEARNT_METHODS: frozenset[str] = AUTOLOSS_METHODS | frozenset({"darts", "slf", "reweight"})
#: The single fixed losses (the built-in candidates).
FIXED_LOSSES: tuple[str, ...] = ("ce", "focal", "kl", "hinge", "mse", "gce", "mae", "tce")
#: How tables name :func:`best_baseline`'s pick (the line under a table; the mark of its row).
BEST_FIXED_LABEL = "best fixed loss (by validation AUC)"
BEST_FIXED_MARK = " (best fixed loss, by valid AUC)"
#: What it is, in words, for the notes under the tables.
BEST_FIXED_NOTE = (
    "the best fixed loss: among the fixed methods (a single loss, `uniform`, `weights:...` or"
    " `search`; never a learnt one such as `autoloss`, `darts`, `slf` or `reweight`), the one"
    " with the highest mean validation AUC for that model (ties: the lower mean validation"
    " logloss); the test split never chooses it"
)
REFERENCE_METHOD = "ce"

_INT_COLUMNS = {"seed", "best_epoch", "epochs", "steps", "train_rows"}
_STR_COLUMNS = {"model", "method", "task", "run_dir", "condition"}

ResultRow = dict[str, Any]


# ---------------------------------------------------------------------------------- rows
def result_row(
    result: RunResult | dict[str, Any],
    *,
    model: str,
    method: str,
    seed: int,
    run_dir: str | Path,
) -> ResultRow:
    """One ``results.csv`` row from a run's result (or result.json's content)."""
    r = result if isinstance(result, RunResult) else RunResult.from_dict(result)
    return {
        "model": model,
        "method": method,
        "seed": int(seed),
        "test_auc": _float(r.test.get("auc")),
        "test_logloss": _float(r.test.get("logloss")),
        "valid_auc": _float(r.valid.get("auc")),
        "valid_logloss": _float(r.valid.get("logloss")),
        "best_epoch": int(r.best_epoch or 0),
        "train_seconds": _float(r.train_seconds),
        "train_rows_per_second": _float(r.train_rows_per_second),
        "epochs": int(r.epochs or 0),
        "steps": int(r.steps or 0),
        "train_rows": int(r.train_rows or 0),
        "search_seconds": _float(r.search_seconds),
        "task": str(r.task or ""),
        "run_dir": str(run_dir),
    }


def _float(v: Any) -> float:
    return math.nan if v is None or v == "" else float(v)


def _number_or_text(v: str | None) -> Any:
    try:
        return _float(v)
    except ValueError:
        return v


def write_results_csv(
    path: str | Path, rows: Iterable[ResultRow], *, extra_columns: Sequence[str] = ()
) -> None:
    """Write ``results.csv`` atomically (a reader never sees half a file); ``extra_columns``
    (the condition and its grid keys) after :data:`RESULT_COLUMNS`."""
    columns = [*RESULT_COLUMNS, *(c for c in extra_columns if c not in RESULT_COLUMNS)]
    with atomic_output(path, "w", what="the results", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: _csv_value(row.get(k)) for k in columns})


def _csv_value(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, list | tuple):  # a list-valued grid key (loss.candidates)
        return ",".join(str(x) for x in v)
    return "" if v is None else v


def read_results_csv(path: str | Path) -> list[ResultRow]:
    """Rows of a ``results.csv`` with numbers parsed (empty cells -> nan); a column of grid
    values keeps the text of a value that is not a number."""
    p = Path(path)
    if not p.is_file():
        raise DataError("results file not found", path=p)
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(
                f"not an autoloss results file (missing columns: {', '.join(missing)})", path=p
            )
        rows = []
        for i, raw in enumerate(reader, start=2):
            row: ResultRow = {}
            try:
                for k, v in raw.items():
                    if k is None:  # cells beyond the header
                        continue
                    if k in _STR_COLUMNS:
                        row[k] = v
                    elif k not in RESULT_COLUMNS:  # a grid key: a number, or its text
                        row[k] = _number_or_text(v)
                    elif k in _INT_COLUMNS:
                        row[k] = int(float(v)) if v not in ("", None) else 0
                    else:
                        row[k] = _float(v)
            except ValueError:
                raise DataError(f"non-numeric value in column '{k}'", path=p, line=i) from None
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------- summary
@dataclass
class MethodStats:
    """One model × method cell: the per-seed values of every numeric column."""

    model: str
    method: str
    seeds: list[int]
    values: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def mean(self, col: str) -> float:
        v = self.values[col]
        return float(np.mean(v)) if v.size else math.nan

    def std(self, col: str) -> float:
        """Sample standard deviation (ddof = 1); nan for a single seed."""
        v = self.values[col]
        return float(np.std(v, ddof=1)) if v.size > 1 else math.nan


@dataclass
class ModelSummary:
    model: str
    cells: list[MethodStats]
    #: :func:`best_baseline`: the best fixed loss, chosen by validation AUC.
    best_baseline: str | None
    #: (method, metric) -> two-sided Welch p-value; absent when not applicable.
    p_vs_ce: dict[tuple[str, str], float] = field(default_factory=dict)
    p_vs_best: dict[tuple[str, str], float] = field(default_factory=dict)

    def cell(self, method: str) -> MethodStats | None:
        return next((c for c in self.cells if c.method == method), None)

    def best_method(self, metric: str) -> str | None:
        """Method with the best mean ``metric`` (highest AUC, lowest logloss)."""
        scored = [(c.mean(metric), c.method) for c in self.cells if not math.isnan(c.mean(metric))]
        if not scored:
            return None
        pick = max if metric.endswith("auc") else min
        return pick(scored)[1]


@dataclass
class Summary:
    models: list[ModelSummary]
    task: str = ""

    @property
    def seeds(self) -> list[int]:
        return sorted({s for m in self.models for c in m.cells for s in c.seeds})


NUMERIC_COLUMNS = tuple(c for c in RESULT_COLUMNS if c not in _STR_COLUMNS and c != "seed")
TESTED_METRICS = ("test_auc", "test_logloss")


def is_fixed_method(method: str) -> bool:
    """Whether ``method`` trains with a fixed loss (anything but :data:`LEARNT_METHODS`)."""
    return method not in LEARNT_METHODS


def _cell_mean(cell: MethodStats, col: str) -> float:
    return cell.mean(col) if col in cell.values else math.nan


def best_baseline(cells: Sequence[MethodStats]) -> str | None:
    """The best fixed loss: the fixed method (:func:`is_fixed_method`) with the highest mean
    validation AUC, ties to the lower mean validation logloss, then to the first cell; cells
    without a validation AUC are skipped (None if no cell is left). Test metrics play no part:
    choosing on test would favour whichever method the test split happens to like."""
    fixed = [
        c for c in cells if is_fixed_method(c.method) and not math.isnan(_cell_mean(c, "valid_auc"))
    ]
    return max(fixed, key=_validation_rank).method if fixed else None


def _validation_rank(cell: MethodStats) -> tuple[float, float]:
    """(mean validation AUC, minus mean validation logloss; -inf without one): larger is better."""
    logloss = _cell_mean(cell, "valid_logloss")
    return _cell_mean(cell, "valid_auc"), -math.inf if math.isnan(logloss) else -logloss


def summarize(
    rows: Sequence[ResultRow],
    *,
    models: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> Summary:
    """Group rows by model × method (in the given orders, else order of appearance) and test them."""
    models = list(models) if models else list(dict.fromkeys(r["model"] for r in rows))
    methods = list(methods) if methods else list(dict.fromkeys(r["method"] for r in rows))
    out: list[ModelSummary] = []
    for model in models:
        cells = []
        for method in methods:
            sel = sorted(
                (r for r in rows if r["model"] == model and r["method"] == method),
                key=lambda r: r["seed"],
            )
            if not sel:
                continue
            values = {
                col: np.array([_float(r.get(col)) for r in sel], dtype=np.float64)
                for col in NUMERIC_COLUMNS
            }
            cells.append(MethodStats(model, method, [int(r["seed"]) for r in sel], values))
        if not cells:
            continue
        ms = ModelSummary(model, cells, best_baseline(cells))
        ref = ms.cell(REFERENCE_METHOD)
        best = ms.cell(ms.best_baseline) if ms.best_baseline else None
        for c in cells:
            for metric in TESTED_METRICS:
                if ref is not None and c.method != REFERENCE_METHOD:
                    ms.p_vs_ce[(c.method, metric)] = welch_ttest(
                        c.values[metric], ref.values[metric]
                    )[1]
                if best is not None and c.method != best.method:
                    ms.p_vs_best[(c.method, metric)] = welch_ttest(
                        c.values[metric], best.values[metric]
                    )[1]
        out.append(ms)
    tasks = {str(r.get("task") or "") for r in rows} - {""}
    return Summary(out, task=tasks.pop() if len(tasks) == 1 else "")


# ---------------------------------------------------------------------------------- paired
@dataclass
class ConditionSummary:
    """The summary of one condition of a grid: ``values`` maps each (short) grid key to the
    text of its value."""

    values: dict[str, str]
    summary: Summary

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


@dataclass
class PairedDiff:
    """A method against the baseline for one condition × model, paired by seed.

    ``mean``: mean over the paired seeds of (method - baseline); ``half_width``: half the width
    of its 95% confidence interval (Student t, pairs - 1 degrees of freedom; nan under 2 pairs).
    ``left_out``: seeds of one of the two without the other (not paired). ``p_welch``: Welch's
    test on every seed of each. ``*_holm``: Holm-adjusted over the comparisons of one table.
    """

    condition: dict[str, str]
    model: str
    method: str
    baseline: str
    pairs: int
    left_out: int
    mean: float
    half_width: float
    p_paired: float
    p_welch: float
    p_paired_holm: float = math.nan
    p_welch_holm: float = math.nan

    @property
    def low(self) -> float:
        return self.mean - (0.0 if math.isnan(self.half_width) else self.half_width)

    @property
    def high(self) -> float:
        return self.mean + (0.0 if math.isnan(self.half_width) else self.half_width)


def baseline_method(methods: Sequence[str]) -> str | None:
    """The method others are paired with: ``ce`` if it is in the grid, else the first one."""
    if REFERENCE_METHOD in methods:
        return REFERENCE_METHOD
    return methods[0] if methods else None


def mean_ci(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its ``level`` confidence interval (Student t); nan half-width for
    fewer than 2 values."""
    n = diffs.size
    if n == 0:
        return math.nan, math.nan
    mean = float(np.mean(diffs))
    if n < 2:
        return mean, math.nan
    from scipy import stats

    sem = float(np.std(diffs, ddof=1)) / math.sqrt(n)
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sem


def _by_seed(cell: MethodStats, metric: str) -> dict[int, float]:
    return {s: float(v) for s, v in zip(cell.seeds, cell.values[metric]) if math.isfinite(float(v))}


def pair_cells(cell: MethodStats, ref: MethodStats | None, metric: str) -> PairedDiff:
    """``cell`` against ``ref`` paired by seed (no ``ref``: nothing paired, every value nan)."""
    a = _by_seed(cell, metric)
    b = _by_seed(ref, metric) if ref is not None else {}
    common = sorted(set(a) & set(b))
    x = np.array([a[s] for s in common], dtype=np.float64)
    z = np.array([b[s] for s in common], dtype=np.float64)
    mean, half = mean_ci(x - z)
    return PairedDiff(
        condition={},
        model=cell.model,
        method=cell.method,
        baseline=ref.method if ref is not None else "",
        pairs=len(common),
        left_out=len(set(a) ^ set(b)) if ref is not None else 0,
        mean=mean,
        half_width=half,
        p_paired=paired_ttest(x, z)[1],
        p_welch=welch_ttest(cell.values[metric], ref.values[metric])[1]
        if ref is not None
        else math.nan,
    )


def paired_differences(
    conditions: Sequence[ConditionSummary],
    baseline: str | None,
    *,
    metric: str = "test_auc",
) -> list[PairedDiff]:
    """Every method but ``baseline`` against it, per condition × model, paired by seed; the
    p-values Holm-adjusted over all of them (the family is the table)."""
    out: list[PairedDiff] = []
    if baseline is None:
        return out
    for cond in conditions:
        for ms in cond.summary.models:
            ref = ms.cell(baseline)
            for c in ms.cells:
                if c.method == baseline:
                    continue
                d = pair_cells(c, ref, metric)
                d.condition = dict(cond.values)
                d.baseline = baseline
                out.append(d)
    for d, p in zip(out, holm([d.p_paired for d in out])):
        d.p_paired_holm = p
    for d, p in zip(out, holm([d.p_welch for d in out])):
        d.p_welch_holm = p
    return out


def fmt_diff(d: PairedDiff, digits: int = 4) -> str:
    """``+0.0012 ± 0.0008`` (mean ± 95% CI half-width); the mean alone for one pair."""
    if d.pairs == 0 or math.isnan(d.mean):
        return "n/a"
    if math.isnan(d.half_width):
        return f"{d.mean:+.{digits}f}"
    return f"{d.mean:+.{digits}f} ± {d.half_width:.{digits}f}"


def paired_rows(
    diffs: Sequence[PairedDiff], *, task: str = "", metric: str = "test_auc"
) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the paired table: the condition's grid values (if any), model,
    method, seeds paired, mean difference ± 95% CI, paired p and Welch p, raw and Holm."""
    keys = list(dict.fromkeys(k for d in diffs for k in d.condition))
    baseline = diffs[0].baseline if diffs else REFERENCE_METHOD
    what = f"{metric.replace('_auc', ' ' + auc_label(task))}" if metric.endswith("auc") else metric
    header = [
        *keys,
        "model",
        "method",
        "seeds paired",
        f"Δ {what} vs {baseline} (mean ± 95% CI)",
        "paired p",
        "paired p (Holm)",
        "Welch p",
        "Welch p (Holm)",
    ]
    rows = []
    for d in diffs:
        seeds = str(d.pairs) + (f" ({d.left_out} left out)" if d.left_out else "")
        rows.append(
            [
                *(d.condition.get(k, "") for k in keys),
                d.model,
                d.method,
                seeds,
                fmt_diff(d),
                fmt_p(d.p_paired),
                fmt_p(d.p_paired_holm),
                fmt_p(d.p_welch),
                fmt_p(d.p_welch_holm),
            ]
        )
    return header, rows


PAIRED_NOTE = (
    "Δ: the method's test AUC minus the baseline's, per seed (runs of one seed share the"
    " initialisation, the data order and the label noise), then mean ± half-width of its 95%"
    " confidence interval (Student t). paired p: two-sided paired t-test on those per-seed"
    " differences (scipy.stats.ttest_rel); Welch p: two-sided Welch t-test on the two methods'"
    " values (every seed of each). (Holm): Holm's step-down adjustment over every comparison of"
    " this table (all its conditions, models and methods); an adjusted p < 0.05 holds for the"
    " table as a family. Seeds present for one method but not the other are left out of the"
    " pairing (counted in `seeds paired`). n/a: fewer than 2 pairs, or no spread."
)


# ---------------------------------------------------------------------------------- formatting
def fmt_mean_std(mean: float, std: float, digits: int = 4) -> str:
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """p-values: 3 significant digits, scientific below 0.001; '–' when not applicable."""
    if p is None:
        return "–"
    if math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 1e-3 else f"{p:.1e}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def auc_label(task: str) -> str:
    return "AUC (macro one-vs-rest)" if task == "multiclass" else "AUC"


def logloss_label(task: str) -> str:
    return "logloss (cross-entropy)" if task == "multiclass" else "logloss"


def significance_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the main table: mean ± std with p-values, best value in bold."""
    header = [
        "model",
        "method",
        "seeds",
        f"test {auc_label(summary.task)}",
        "p vs ce",
        "p vs best fixed loss",
        f"test {logloss_label(summary.task)}",
        "p vs ce",
        "p vs best fixed loss",
    ]
    rows: list[list[str]] = []
    for ms in summary.models:
        bold = {m: ms.best_method(m) for m in TESTED_METRICS}
        for c in ms.cells:
            name = c.method + (BEST_FIXED_MARK if c.method == ms.best_baseline else "")
            row = [ms.model, name, str(c.n)]
            for metric in TESTED_METRICS:
                cell = fmt_mean_std(c.mean(metric), c.std(metric))
                if bold[metric] == c.method:
                    cell = f"**{cell}**"
                row += [
                    cell,
                    fmt_p(ms.p_vs_ce.get((c.method, metric))),
                    fmt_p(ms.p_vs_best.get((c.method, metric))),
                ]
            rows.append(row)
    return header, rows


def paper_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """The paper's Table 2 layout: one row per model, one column per method, "AUC / logloss"."""
    methods = list(dict.fromkeys(c.method for ms in summary.models for c in ms.cells))
    rows = []
    for ms in summary.models:
        bold = {m: ms.best_method(m) for m in TESTED_METRICS}
        row = [ms.model]
        for method in methods:
            c = ms.cell(method)
            if c is None:
                row.append("–")
                continue
            parts = []
            for metric in TESTED_METRICS:
                s = f"{c.mean(metric):.4f}"
                parts.append(f"**{s}**" if bold[metric] == method else s)
            row.append(" / ".join(parts))
        rows.append(row)
    return ["model", *methods], rows


def efficiency_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "method",
        "seeds",
        "train s (mean ± std)",
        "rows/s (mean)",
        "epochs run (mean)",
        "best epoch (mean)",
        "search s (mean total per run)",
    ]
    rows = []
    for ms in summary.models:
        for c in ms.cells:
            search = (
                c.mean("search_seconds")
                if np.isfinite(c.values["search_seconds"]).any()
                else math.nan
            )
            rows.append(
                [
                    ms.model,
                    c.method,
                    str(c.n),
                    fmt_mean_std(c.mean("train_seconds"), c.std("train_seconds"), 1),
                    f"{c.mean('train_rows_per_second'):,.0f}",
                    f"{c.mean('epochs'):.1f}",
                    f"{c.mean('best_epoch'):.1f}",
                    "–" if math.isnan(search) else f"{search:.1f}",
                ]
            )
    return header, rows


def _head(seeds: Sequence[int], title: str, notes: Sequence[str]) -> list[str]:
    seed_text = (
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))})" if seeds else "no finished runs"
    )
    parts = [f"# {title}", ""]
    parts += [f"- {n}" for n in notes]
    parts += [
        f"- {seed_text}; mean ± sample standard deviation (ddof = 1) over seeds; best mean in bold.",
        "- p: two-sided Welch t-test (scipy.stats.ttest_ind, equal_var=False) on the per-seed values,"
        f" against `ce` and against {BEST_FIXED_NOTE}.",
        "",
    ]
    return parts


def _summary_sections(summary: Summary, level: int = 2, paired: Sequence[str] = ()) -> list[str]:
    """The paper-style, significance and efficiency tables of one summary (``paired``: lines
    placed after the significance table)."""
    h = "#" * level
    header, rows = paper_rows(summary)
    parts = [
        f"{h} Test {auc_label(summary.task)} / {logloss_label(summary.task)} (mean over seeds)",
        "",
    ]
    parts += [_md_table(header, rows), ""]
    header, rows = significance_rows(summary)
    parts += [f"{h} Mean ± std and significance", "", _md_table(header, rows), ""]
    parts += [_best_fixed_line(summary), ""]
    parts += paired
    header, rows = efficiency_rows(summary)
    parts += [f"{h} Efficiency", "", _md_table(header, rows), ""]
    parts += [
        "Train seconds: the recommender's training loop (evaluation excluded). Search seconds:"
        " the total time of the weight search (all trials) of `search`.",
        "",
    ]
    return parts


def _best_fixed_line(summary: Summary) -> str:
    """``Best fixed loss (by validation AUC): deepfm: focal (valid AUC 0.8012), ...``."""
    picks = []
    for ms in summary.models:
        cell = ms.cell(ms.best_baseline) if ms.best_baseline else None
        picks.append(
            f"{ms.model}: {cell.method} (mean valid AUC {cell.mean('valid_auc'):.4f})"
            if cell is not None
            else f"{ms.model}: – (no fixed method with a validation AUC)"
        )
    return f"{BEST_FIXED_LABEL[0].upper()}{BEST_FIXED_LABEL[1:]}: {', '.join(picks)}."


def _paired_section(diffs: Sequence[PairedDiff], heading: str, task: str) -> list[str]:
    if not diffs:
        return []
    return [heading, "", _md_table(*paired_rows(diffs, task=task)), "", PAIRED_NOTE, ""]


def render_markdown(
    summary: Summary,
    *,
    title: str = "Comparison",
    notes: Sequence[str] = (),
    baseline: str | None = None,
) -> str:
    """``table.md``: paper-style table, the significance table, the paired differences to the
    baseline (``ce``, else the first method; none with a single method) and the efficiency
    table."""
    parts = _head(summary.seeds, title, notes)
    if summary.models:
        methods = list(dict.fromkeys(c.method for ms in summary.models for c in ms.cells))
        baseline = baseline or baseline_method(methods)
        diffs = paired_differences([ConditionSummary({}, summary)], baseline)
        heading = f"## Paired differences to `{baseline}` (test AUC)"
        parts += _summary_sections(summary, paired=_paired_section(diffs, heading, summary.task))
    return "\n".join(parts)


def render_grid_markdown(
    conditions: Sequence[ConditionSummary],
    *,
    title: str = "Comparison",
    notes: Sequence[str] = (),
    baseline: str | None = None,
) -> str:
    """``table.md`` of an experiment with conditions: the summary across conditions (each
    method's test AUC difference to ``baseline``, paired by seed, Holm over the whole table),
    then a section per condition with the tables of :func:`render_markdown`."""
    seeds = sorted({s for c in conditions for s in c.summary.seeds})
    task = next((c.summary.task for c in conditions if c.summary.task), "")
    parts = _head(seeds, title, notes)
    diffs = paired_differences(conditions, baseline)
    parts += _paired_section(
        diffs,
        f"## Summary across conditions: test AUC difference to `{baseline}`",
        task,
    ) or [f"No method to compare with `{baseline}` yet.", ""]
    for cond in conditions:
        parts += [f"## Condition {cond.label}", ""]
        if cond.summary.models:
            parts += _summary_sections(cond.summary, level=3)
        else:
            parts += ["No finished runs.", ""]
    return "\n".join(parts)
