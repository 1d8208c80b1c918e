"""What a report shows, for one run and for an experiment; :func:`write_report` writes it.

A run report: its metrics, learning curves, candidate-probability evolution (learnt policies),
the controller's policy map (runs with ``controller.pt``) and its configuration. An experiment
report: the comparison tables, test metrics per method with error bars over seeds, and the same
figures averaged over seeds per model × method. An experiment with conditions (``--grid``) adds
the summary across conditions and figures of each method's test-AUC difference to ``ce``
against the grid value; its tables and figures are then per condition. A figure whose data is
absent is skipped with a note saying why.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from autoloss.errors import DataError
from autoloss.experiments.tables import (
    PAIRED_NOTE,
    ConditionSummary,
    PairedDiff,
    Summary,
    baseline_method,
    efficiency_rows,
    paired_differences,
    paired_rows,
    paper_rows,
    read_results_csv,
    significance_rows,
    summarize,
)
from autoloss.report import plots
from autoloss.report.html import HtmlPage
from autoloss.report.policy_map import PolicyMapUnavailable, average_maps, compute_policy_map
from autoloss.report.records import (
    Curve,
    RunRecords,
    curve_from_records,
    mean_curve,
    probability_keys,
    read_run,
    varies,
)

if TYPE_CHECKING:
    from autoloss.experiments.compare import Experiment

REPORT_DIR = "report"
HTML_NAME = "report.html"


def write_report(path: Path, out: Path | None = None) -> Path:
    """Report on a run or an experiment directory; returns the path of ``report.html``."""
    path = Path(path)
    if (path / "experiment.yaml").is_file():
        return experiment_report(path, out)
    if (path / "config.yaml").is_file() or (path / "result.json").is_file():
        return run_report(path, out)
    if not path.exists():
        raise DataError("no such directory", path=path)
    raise DataError(
        "neither a run directory (config.yaml) nor an experiment directory (experiment.yaml)",
        path=path,
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ---------------------------------------------------------------------------------- sections
def _candidate_section(
    page: HtmlPage,
    out: Path,
    runs: Sequence[Curve],
    candidates: Sequence[str],
    *,
    name: str,
    title: str,
    method: str,
) -> bool:
    """The probability evolution, averaged over ``runs`` (seeds); skipped for fixed weights."""
    curve = mean_curve(runs)
    overall, per_class = probability_keys(curve, candidates)
    if not overall or not len(curve):
        page.note(f"{title}: skipped: `{method}` logged no candidate probabilities.")
        return False
    keys = overall + [k for ks in per_class.values() for k in ks]
    # judged per run: seeds of a fixed-weight method (search) differ, and so would their mean
    if not any(varies(c, keys) for c in runs):
        fixed = ", ".join(f"{k[2:]} {float(np.nanmean(curve.values[k])):.2f}" for k in overall)
        what = "fixed weights" + (" (mean over seeds: " if len(runs) > 1 else " (")
        page.note(f"{title}: skipped: `{method}` uses {what}{fixed}).")
        return False
    fig = plots.candidate_evolution(curve, overall, per_class, title=title)
    png = plots.save_png(fig, out / name)
    page.image(png, title)
    return True


def _policy_map_section(
    page: HtmlPage, out: Path, controllers: Sequence[Path], *, name: str, title: str, method: str
) -> bool:
    if not controllers:
        page.note(f"{title}: skipped: `{method}` saved no controller (controller.pt).")
        return False
    try:
        maps = [compute_policy_map(p) for p in controllers]
    except PolicyMapUnavailable as exc:
        page.note(f"{title}: skipped: {exc}")
        return False
    pm = average_maps(maps)
    seeds = f" (mean over {len(maps)} seeds, band ± std)" if len(maps) > 1 else ""
    fig = plots.policy_map(
        pm.grid, pm.alpha, pm.candidates, title=title + seeds, task=pm.task, spread=pm.spread
    )
    png = plots.save_png(fig, out / name)
    page.image(png, title)
    return True


# ---------------------------------------------------------------------------------- one run
def _fmt(v: object, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "–" if v is None else str(v)


def run_report(run_dir: Path, out: Path | None = None) -> Path:
    rec = read_run(run_dir)
    out = out or run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    task = str((rec.result or {}).get("task") or rec.config.get("data", {}).get("task", "binary"))
    label = f"{rec.model} with {rec.method}"
    page = HtmlPage(f"Run {run_dir.name}: {label}")
    r = rec.result
    if r is None:
        page.note(
            "This run has not finished (no result.json): the figures show what it recorded so far."
        )
    else:
        rows = [
            [
                "validation",
                _fmt(r.get("valid", {}).get("auc")),
                _fmt(r.get("valid", {}).get("logloss")),
            ],
        ]
        if r.get("test"):
            rows.append(["test", _fmt(r["test"].get("auc")), _fmt(r["test"].get("logloss"))])
        page.heading("Result")
        page.table(
            ["split", "AUC" + (" (macro one-vs-rest)" if task == "multiclass" else ""), "logloss"],
            rows,
        )
        page.table(
            ["model", "method", "seed", "task", "best epoch", "epochs", "train s", "rows/s"],
            [
                [
                    rec.model,
                    rec.method,
                    _fmt(r.get("seed")),
                    task,
                    _fmt(r.get("best_epoch")),
                    _fmt(r.get("epochs")),
                    _fmt(r.get("train_seconds"), 1),
                    f"{float(r.get('train_rows_per_second', 0)):,.0f}",
                ]
            ],
        )
    page.heading("Learning curves")
    curve = curve_from_records(rec.evals, ["auc", "logloss"])
    if len(curve):
        fig = plots.learning_curves(
            {rec.method: curve}, title=f"{label}: validation metrics", task=task
        )
        page.image(plots.save_png(fig, out / "learning_curves.png"), "learning curves")
    else:
        page.note("Learning curves: skipped: metrics.jsonl holds no validation records.")
    page.heading("Candidate losses")
    _candidate_section(
        page,
        out,
        [curve_from_records(rec.policy)],
        rec.candidates,
        name="candidate_probabilities.png",
        title=f"{label}: candidate probabilities during training",
        method=rec.method,
    )
    ctrl = run_dir / "controller.pt"
    _policy_map_section(
        page,
        out,
        [ctrl] if ctrl.is_file() else [],
        name="policy_map.png",
        title=f"{label}: the controller's policy map",
        method=rec.method,
    )
    page.heading("Configuration")
    page.pre(yaml.safe_dump(rec.config, sort_keys=False) if rec.config else "(no config.yaml)")
    return page.write(out / HTML_NAME)


# ---------------------------------------------------------------------------------- experiments
GRID_READING = (
    "Each point is the mean over seeds of a method's test AUC minus that of `{base}` with the same"
    " seed (one seed: the same initialisation, data order and label noise), under the condition"
    " on the x axis; the bar is the 95% confidence interval of that mean. A bar that does not"
    " cross the dashed zero line is a difference the seeds support at the 5% level for that"
    " point alone; the table gives the Holm-adjusted p-values that hold for all points together."
)


def _numeric(values: Sequence[object]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _grid_figures(
    page: HtmlPage, out: Path, exp: Experiment, diffs: Sequence[PairedDiff], task: str
) -> None:
    """One figure per combination of the grid keys but the x one (the first numeric key)."""
    from autoloss.experiments.grid import short_keys, value_text

    short = short_keys(exp.grid_keys)
    x_at = next((i for i, (_, vs) in enumerate(exp.grid) if _numeric(vs)), 0)
    x_full, x_vals = exp.grid[x_at]
    others = [
        (short[k], [value_text(v) for v in vs]) for i, (k, vs) in enumerate(exp.grid) if i != x_at
    ]
    base = diffs[0].baseline if diffs else "ce"
    for combo in itertools.product(*(vs for _, vs in others)):
        fixed = dict(zip((k for k, _ in others), combo))
        sel = [d for d in diffs if all(d.condition.get(k) == v for k, v in fixed.items())]
        if not any(d.pairs for d in sel):
            continue
        where = ", ".join(f"{k}={v}" for k, v in fixed.items())
        fig = plots.grid_differences(
            sel,
            models=exp.models,
            x_key=short[x_full],
            x_values=[value_text(v) for v in x_vals],
            x_label=plots.GRID_AXIS_LABELS.get(x_full, x_full),
            positions=[float(v) for v in x_vals] if _numeric(x_vals) else None,
            title=f"Test AUC difference to {base} against {short[x_full]}"
            + (f" ({where})" if where else "")
            + ": mean and 95% CI over seeds",
            task=task,
        )
        name = "grid_auc_difference" + (f"_{_slug(where.replace(', ', '-'))}" if where else "")
        page.image(plots.save_png(fig, out / f"{name}.png"), f"test AUC difference to {base}")


def _condition_tables(page: HtmlPage, summary: Summary, level: int) -> None:
    page.heading("Test metrics (mean over seeds, best in bold)", level)
    page.table(*paper_rows(summary))
    page.heading("Mean ± std and Welch t-tests", level)
    page.paragraph(
        "Mean ± sample standard deviation over seeds. p: two-sided Welch t-test against `ce` and against "
        "the best baseline (the non-AutoLoss method with the highest mean test AUC for the model)."
    )
    page.table(*significance_rows(summary))


def experiment_report(exp_dir: Path, out: Path | None = None) -> Path:
    """report.html of an experiment: tables (per condition with a grid), figures, all runs."""
    from autoloss.experiments.compare import Experiment, collect_rows

    exp = Experiment.load(exp_dir)
    out = out or exp_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(exp)
    if not rows and (exp_dir / "results.csv").is_file():
        rows = read_results_csv(exp_dir / "results.csv")
    summary = summarize(rows, models=exp.models, methods=exp.methods)
    task = summary.task = summary.task or exp.task or "binary"
    page = HtmlPage(exp.title())
    for n in exp.notes():
        page.paragraph(n)
    total = len(exp.plan())
    if len(rows) < total:
        page.note(f"Incomplete: {len(rows)} of {total} runs have finished.")
    if not rows:
        page.note("No finished runs yet: nothing to tabulate or plot.")
        return page.write(out / HTML_NAME)
    if exp.grid:
        _grid_tables(page, out, exp, rows, task)
    else:
        _single_tables(page, out, exp, summary, task)
    cells = _runs_by_cell(exp)
    _learning_curve_figures(page, out, exp, cells, task)
    _candidate_figures(page, out, exp, cells)
    _policy_map_figures(page, out, exp, cells)
    _all_runs_table(page, exp, rows)
    page.heading("Base configuration")
    page.pre(yaml.safe_dump(exp.base.to_dict(), sort_keys=False))
    return page.write(out / HTML_NAME)


Cells = dict[tuple[str, str, str], list[RunRecords]]


def _grid_tables(page: HtmlPage, out: Path, exp: Any, rows: Sequence[Any], task: str) -> None:
    from autoloss.experiments.compare import condition_summaries

    baseline = baseline_method(exp.methods)
    conds = condition_summaries(exp, rows)
    for c in conds:
        c.summary.task = task
    diffs = paired_differences(conds, baseline)
    page.heading(f"Conditions: test AUC difference to {baseline}")
    if diffs:
        page.paragraph(GRID_READING.format(base=baseline))
        _grid_figures(page, out, exp, diffs, task)
        page.table(*paired_rows(diffs, task=task))
        page.paragraph(PAIRED_NOTE)
    else:
        page.note(f"No method besides {baseline} has finished runs: nothing to compare.")
    for cond in conds:
        page.heading(f"Condition {cond.label}")
        if cond.summary.models:
            _condition_tables(page, cond.summary, 3)
            page.heading("Efficiency", 3)
            page.table(*efficiency_rows(cond.summary))
        else:
            page.note("No finished runs under this condition yet.")


def _single_tables(page: HtmlPage, out: Path, exp: Any, summary: Any, task: str) -> None:
    baseline = baseline_method(exp.methods)
    _condition_tables(page, summary, 2)
    page.image(
        plots.save_png(plots.metric_errorbars(summary), out / "metrics_by_method.png"),
        "metrics by method",
    )
    diffs = paired_differences([ConditionSummary({}, summary)], baseline)
    if diffs:
        page.heading(f"Paired differences to {baseline} (test AUC)")
        page.table(*paired_rows(diffs, task=task))
        page.paragraph(PAIRED_NOTE)
    page.heading("Efficiency")
    page.table(*efficiency_rows(summary))


def _runs_by_cell(exp: Any) -> Cells:
    """The finished runs per (condition name, model, method): figures never mix conditions."""
    from autoloss.experiments.grid import condition_name

    cells: Cells = {}
    for r in exp.plan():
        if (r.run_dir / "result.json").is_file():
            key = (condition_name(r.condition, exp.grid_keys), r.model, r.method)
            cells.setdefault(key, []).append(read_run(r.run_dir))
    return cells


def _named(cond_name: str, text: str) -> tuple[str, str]:
    """File-name suffix and title of a figure of a condition."""
    if not cond_name:
        return "", text
    return f"_{cond_name}", f"{text} [{cond_name}]"


def _condition_names(exp: Any) -> list[str]:
    from autoloss.experiments.grid import condition_name

    return [condition_name(c, exp.grid_keys) for c in exp.conditions()]


def _learning_curve_figures(page: HtmlPage, out: Path, exp: Any, cells: Cells, task: str) -> None:
    page.heading("Learning curves (mean over seeds)")
    for cname in _condition_names(exp):
        for model in exp.models:
            curves = {
                method: mean_curve(
                    [
                        curve_from_records(x.evals, ["auc", "logloss"])
                        for x in cells.get((cname, model, method), [])
                    ]
                )
                for method in exp.methods
            }
            curves = {k: v for k, v in curves.items() if len(v)}
            suffix, title = _named(cname, model)
            if not curves:
                page.note(f"{title}: no validation records.")
                continue
            fig = plots.learning_curves(
                curves,
                title=f"{title}: validation metrics (mean ± std over seeds, where at least half still train)",
                task=task,
            )
            page.image(
                plots.save_png(fig, out / f"learning_curves_{_slug(model)}{suffix}.png"),
                f"learning curves {title}",
            )


def _candidate_figures(page: HtmlPage, out: Path, exp: Any, cells: Cells) -> None:
    page.heading("Candidate losses")
    for cname in _condition_names(exp):
        for model in exp.models:
            for method in exp.methods:
                recs = cells.get((cname, model, method), [])
                if not recs:
                    continue
                suffix, title = _named(cname, f"{model} with {method}")
                _candidate_section(
                    page,
                    out,
                    [curve_from_records(x.policy) for x in recs],
                    recs[0].candidates,
                    name=f"candidate_probabilities_{_slug(model)}-{_slug(method)}{suffix}.png",
                    title=f"{title}: candidate probabilities (mean over {len(recs)} seeds)",
                    method=method,
                )


def _policy_map_figures(page: HtmlPage, out: Path, exp: Any, cells: Cells) -> None:
    page.heading("Policy maps")
    shown = 0
    for cname in _condition_names(exp):
        for model in exp.models:
            for method in exp.methods:
                ctrls = [x.run_dir / "controller.pt" for x in cells.get((cname, model, method), [])]
                ctrls = [p for p in ctrls if p.is_file()]
                if ctrls:
                    suffix, title = _named(cname, f"{model} with {method}")
                    shown += _policy_map_section(
                        page,
                        out,
                        ctrls,
                        name=f"policy_map_{_slug(model)}-{_slug(method)}{suffix}.png",
                        title=f"{title}: the controller's policy map",
                        method=method,
                    )
    if not shown:
        page.note("Policy maps: skipped: no run of this experiment saved a per-example controller.")


def _all_runs_table(page: HtmlPage, exp: Any, rows: Sequence[Any]) -> None:
    page.heading("All runs")
    grid_cols = ["condition"] if exp.grid else []
    header = [*grid_cols, "model", "method", "seed", "test AUC", "test logloss", "valid AUC"]
    page.table(
        [*header, "best epoch", "train s"],
        [
            [
                *(str(r.get(c, "")) for c in grid_cols),
                r["model"],
                r["method"],
                str(r["seed"]),
                _fmt(r["test_auc"]),
                _fmt(r["test_logloss"]),
                _fmt(r["valid_auc"]),
                str(r["best_epoch"]),
                _fmt(r["train_seconds"], 1),
            ]
            for r in rows
        ],
    )
