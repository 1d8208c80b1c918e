"""What a report shows, for one run and for an experiment; :func:`write_report` writes it.

A run report: its metrics, learning curves, candidate-probability evolution (learnt policies),
the controller's policy map (runs with ``controller.pt``), the weight of each sampled training row
(runs with ``example_weights.npz``: ``reweight``) and its configuration. An experiment report: the
comparison tables, test metrics per method with error bars over seeds, the same figures averaged
over seeds per model × method, and the per-example weights of each cell's first seed that has
them. An experiment with conditions (``--grid``) adds the summary across conditions and figures
of each method's test-AUC difference to ``ce`` against the grid value; its tables and figures are
then per condition. A figure whose data is
absent is skipped with a note saying why.
"""

from __future__ import annotations

import itertools
import math
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from autoloss.errors import DataError
from autoloss.experiments.tables import (
    AUTOLOSS_METHODS,
    BEST_FIXED_NOTE,
    PAIRED_NOTE,
    ConditionSummary,
    PairedDiff,
    Summary,
    auc_label,
    baseline_method,
    efficiency_rows,
    fmt_diff,
    fmt_p,
    pair_cells,
    paired_differences,
    paired_rows,
    paper_rows,
    read_results_csv,
    significance_rows,
    summarize,
)
from autoloss.files import make_dirs, remove_stale_temporaries
from autoloss.report import plots
from autoloss.report.html import HtmlPage
from autoloss.report.policy_map import (
    DISAGREEMENT_STD,
    UNIFORM_TOLERANCE,
    Favourite,
    PolicyMap,
    PolicyMapUnavailable,
    average_maps,
    compute_policy_map,
    favourites,
    widest_spread,
)
from autoloss.report.records import (
    Curve,
    RunRecords,
    curve_from_records,
    mean_curve,
    probability_keys,
    read_run,
    varies,
)
from autoloss.train.rundir import RunDir

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


def start_output(out: Path) -> None:
    """Create the report directory and remove the temporary files that a report killed mid-write
    left there (the directory is the report's own)."""
    make_dirs(out, "the report directory")
    remove_stale_temporaries(out)


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
    shared = bool(per_class) and all(shares_weights(c, candidates) for c in runs)
    if shared:  # one global weight vector (darts): a per-class panel would repeat the overall one
        per_class = {}
    fig = plots.candidate_evolution(curve, overall, per_class, title=title, shared=shared)
    png = plots.save_png(fig, out / name)
    page.image(png, title)
    return True


def shares_weights(curve: Curve, candidates: Sequence[str], tol: float = 1e-6) -> bool:
    """Whether every per-class probability ``p_<cand>_y<c>`` a run logged equals the overall
    ``p_<cand>`` (a method with one weight vector for every example, such as darts)."""
    _, per_class = probability_keys(curve, candidates)
    if not per_class:
        return False
    for keys in per_class.values():
        for key in keys:
            a, b = curve.values[key], curve.values.get(key[: key.rindex("_y")])
            if b is None:
                return False
            both = np.isfinite(a) & np.isfinite(b)
            if not both.any() or float(np.abs(a[both] - b[both]).max()) > tol:
                return False
    return True


#: The policy maps of one cell (one per seed, with the seeds), or why there are none.
Maps = tuple[list[PolicyMap], list[int]] | str


def load_maps(controllers: Sequence[tuple[int, Path]]) -> Maps:
    """The policy map of each ``(seed, controller.pt)``, or the reason they cannot be drawn."""
    try:
        maps = [compute_policy_map(p) for _, p in controllers]
        average_maps(maps)  # the controllers of one cell must agree in candidates and task
    except PolicyMapUnavailable as exc:
        return str(exc)
    return maps, [s for s, _ in controllers]


def _policy_map_section(
    page: HtmlPage, out: Path, loaded: Maps | None, *, name: str, title: str, method: str
) -> bool:
    if loaded is None:
        page.note(f"{title}: skipped: `{method}` saved no controller (controller.pt).")
        return False
    if isinstance(loaded, str):
        page.note(f"{title}: skipped: {loaded}")
        return False
    maps = loaded[0]
    pm = average_maps(maps)
    seeds = f" (mean over {len(maps)} seeds, band ± std)" if len(maps) > 1 else ""
    fig = plots.policy_map(
        pm.grid, pm.alpha, pm.candidates, title=title + seeds, task=pm.task, spread=pm.spread
    )
    png = plots.save_png(fig, out / name)
    page.image(png, title)
    return True


#: The arrays of an ``example_weights.npz``, or why it cannot be read.
ExampleWeights = dict[str, np.ndarray] | str


def read_example_weights(path: Path) -> ExampleWeights:
    """The arrays of a run's ``example_weights.npz``, or the reason they cannot be drawn."""
    from autoloss.train.example_weights import load_example_weights as load

    try:
        arrays = load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        return f"cannot read {path.name}: {exc}"
    missing = [k for k in ("prediction", "label", "weight") if k not in arrays]
    if missing:
        return f"{path.name} lacks {', '.join(missing)}"
    n = {
        k: np.shape(arrays[k]) for k in ("prediction", "label", "weight", "flipped") if k in arrays
    }
    if len(set(n.values())) > 1 or len(n["weight"]) != 1 or not n["weight"][0]:
        return f"{path.name} holds no rows, or arrays of different shapes ({n})"
    return arrays


def example_weights_sentence(arrays: Mapping[str, np.ndarray]) -> str:
    """What the weights do, in plain words: to flipped against clean rows where the run knows
    its flips, else to positives against negatives (binary) or to the rows as a whole."""
    groups = {g.name: g for g in plots.weight_groups(arrays)}
    off = f"switched off (weight < {plots.WEIGHT_OFF:g})"
    if "clean" in groups and "flipped" in groups:
        return _compare_groups(
            groups["flipped"], "flipped rows", groups["clean"], "clean rows", off
        )
    if plots.knows_flips(arrays):
        return "No sampled row has a flipped label; " + _all_rows_text(arrays, off)
    if plots.binary_labels(arrays):
        label = np.asarray(arrays["label"])
        pos, neg = (plots.weight_groups(arrays, label == c) for c in (1, 0))
        if pos and neg:
            return _compare_groups(pos[0], "positives", neg[0], "negatives", off)
    text = _all_rows_text(arrays, off)
    return text[0].upper() + text[1:]


def _compare_groups(
    a: plots.WeightGroup, a_name: str, b: plots.WeightGroup, b_name: str, off: str
) -> str:
    share = plots.share_text
    return (
        f"{a_name.capitalize()} get a mean weight of {a.mean:.2f} against {b.mean:.2f} for"
        f" {b_name}; {share(a.off_share)} of {a_name} and {share(b.off_share)} of {b_name} are"
        f" {off}."
    )


def _all_rows_text(arrays: Mapping[str, np.ndarray], off: str) -> str:
    rows = plots.weight_groups(arrays)
    if not rows:
        return "no sampled row has a finite prediction and weight."
    w = np.concatenate([g.weight for g in rows])
    lo, hi = np.quantile(w, [0.1, 0.9])
    share = plots.share_text(float(np.mean(w < plots.WEIGHT_OFF)))
    return (
        f"the middle 80% of the weights lie between {lo:.2f} and {hi:.2f}; {share} of the rows"
        f" are {off}."
    )


def _example_weights_section(
    page: HtmlPage,
    out: Path,
    loaded: ExampleWeights,
    *,
    name: str,
    title: str,
    task: str,
    lead: str = "",
) -> None:
    """The figure of one run's sample and its sentence (``lead`` before it), or a note."""
    if isinstance(loaded, str):
        page.note(f"{title}: skipped: {loaded}")
        return
    fig = plots.example_weights_figure(loaded, title=title, task=task)
    page.image(plots.save_png(fig, out / name), title)
    page.paragraph(lead + example_weights_sentence(loaded))


# ---------------------------------------------------------------------------------- one run
def _fmt(v: object, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "–" if v is None else str(v)


def run_report(run_dir: Path, out: Path | None = None) -> Path:
    rec = read_run(run_dir)
    out = out or run_dir / REPORT_DIR
    start_output(out)
    task = str(
        (rec.result.task if rec.result else None)
        or rec.config.get("data", {}).get("task", "binary")
    )
    label = f"{rec.model} with {rec.method}"
    page = HtmlPage(f"Run {run_dir.name}: {label}")
    r = rec.result
    if r is None:
        page.note(
            "This run has not finished (no result.json): the figures show what it recorded so far."
        )
    else:
        rows = [["validation", _fmt(r.valid.get("auc")), _fmt(r.valid.get("logloss"))]]
        if r.test:
            rows.append(["test", _fmt(r.test.get("auc")), _fmt(r.test.get("logloss"))])
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
                    _fmt(r.seed),
                    task,
                    _fmt(r.best_epoch),
                    _fmt(r.epochs),
                    _fmt(r.train_seconds, 1),
                    f"{float(r.train_rows_per_second or 0):,.0f}",
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
    seed = _seed(rec)
    loaded = load_maps([(seed, ctrl)]) if ctrl.is_file() else None
    if _policy_map_section(
        page,
        out,
        loaded,
        name="policy_map.png",
        title=f"{label}: the controller's policy map",
        method=rec.method,
    ) and not isinstance(loaded, str | None):
        page.paragraph(policy_sentence(label, *loaded))
    weights = RunDir(run_dir).example_weights
    if weights.is_file():
        page.heading("Per-example weights")
        _example_weights_section(
            page,
            out,
            read_example_weights(weights),
            name="example_weights.png",
            title=f"{label}: the weight of each sampled training row against its prediction",
            task=task,
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
        f"{BEST_FIXED_NOTE}."
    )
    page.table(*significance_rows(summary))


def experiment_report(exp_dir: Path, out: Path | None = None) -> Path:
    """report.html of an experiment: tables (per condition with a grid), figures, all runs."""
    return experiment_report_and_reading(exp_dir, out)[0]


def experiment_report_and_reading(exp_dir: Path, out: Path | None = None) -> tuple[Path, list[str]]:
    """:func:`experiment_report`, and its "In short" as markdown sentences (empty without
    finished runs), for a caller that also prints them (the demo)."""
    from autoloss.experiments.compare import Experiment, collect_rows

    exp = Experiment.load(exp_dir)
    out = out or exp_dir / REPORT_DIR
    start_output(out)
    rows = collect_rows(exp)
    if not rows and (exp_dir / "results.csv").is_file():
        rows = read_results_csv(exp_dir / "results.csv")
    summary = summarize(rows, models=exp.models, methods=exp.methods)
    task = summary.task = summary.task or exp.task or "binary"
    page = HtmlPage(exp.title())
    total = len(exp.plan())
    if len(rows) < total:
        page.note(f"Incomplete: {len(rows)} of {total} runs have finished.")
    if not rows:
        page.note("No finished runs yet: nothing to tabulate or plot.")
        _setup(page, exp)
        _grid_and_base(page, exp)
        return page.write(out / HTML_NAME), []
    cells = _runs_by_cell(exp)
    maps = _cell_maps(exp, cells)
    reading = in_short_items(exp, rows, summary, maps, task)
    _in_short(page, exp, reading)
    _setup(page, exp)
    if exp.grid:
        _grid_tables(page, out, exp, rows, task)
    else:
        _single_tables(page, out, exp, summary, task)
    _learning_curve_figures(page, out, exp, cells, task)
    _candidate_figures(page, out, exp, cells)
    _policy_map_figures(page, out, exp, maps)
    _example_weight_figures(page, out, exp, cells, task)
    _all_runs_table(page, exp, rows)
    _grid_and_base(page, exp)
    return page.write(out / HTML_NAME), reading


def _setup(page: HtmlPage, exp: Any) -> None:
    page.heading("Setup")
    for n in exp.notes():
        page.paragraph(n)


def per_run_keys(exp: Any) -> list[str]:
    """The settings each run of ``exp`` sets itself (the base's values of them are unused)."""
    return ["model.name", "loss.method", "train.seed", "out", *exp.grid_keys]


def _grid_and_base(page: HtmlPage, exp: Any) -> None:
    """What the experiment varies (models, methods, seeds, grid keys), then the configuration
    every run shares: the base without the keys each run sets."""
    from autoloss.experiments.grid import value_text

    page.heading("Grid and base configuration")
    rows = [
        ["models (`model.name`)", ", ".join(exp.models)],
        ["methods (`loss.method`)", ", ".join(exp.methods)],
        ["seeds (`train.seed`)", ", ".join(str(s) for s in exp.seeds)],
        *[[f"`{k}`", ", ".join(value_text(v) for v in vs)] for k, vs in exp.grid],
    ]
    page.table(["varies over", "values"], rows)
    n = len(exp.plan())
    page.paragraph(
        f"{n} runs: every combination of the values above. Each run is the base configuration"
        " below with its own model, method"
        + (", seed and condition." if exp.grid else " and seed.")
    )
    base = exp.base.to_dict()
    for key in per_run_keys(exp):
        _drop(base, key.split("."))
    page.pre(yaml.safe_dump(base, sort_keys=False))


def _drop(d: dict[str, Any], parts: Sequence[str]) -> None:
    """Remove a dotted key from nested dicts (``model.x`` may live in ``model.extra``)."""
    if len(parts) == 1:
        d.pop(parts[0], None)
        return
    sub = d.get(parts[0])
    if isinstance(sub, dict):
        if parts[1] not in sub and parts[0] == "model" and isinstance(sub.get("extra"), dict):
            sub["extra"].pop(".".join(parts[1:]), None)
        else:
            _drop(sub, parts[1:])


# ---------------------------------------------------------------------------------- in short
SEED_NOISE_NOTE = (
    "Beyond seed noise means a two-sided paired t-test over the seeds (runs of one seed share the"
    " initialisation, the data order and any label noise) gives p < 0.05: for the winner against"
    " the runner-up one test, uncorrected; against `{base}` the Holm-adjusted p of the paired"
    " table below. With few seeds only large differences can show."
)


def _verdict(p: float) -> str:
    if math.isnan(p):
        return "cannot be tested (fewer than 2 paired seeds, or no spread)"
    return "beyond seed noise" if p < 0.05 else "within seed noise"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def winner_sentences(
    summary: Summary,
    diffs: Sequence[PairedDiff],
    baseline: str | None,
    *,
    task: str,
    condition: dict[str, str] | None = None,
) -> list[str]:
    """Per model: the method with the highest mean test AUC and whether its lead over the
    runner-up, and its difference to ``baseline``, are beyond seed noise (one or two sentences).
    ``diffs``: the paired differences to ``baseline`` (their Holm-adjusted p is used)."""
    out = []
    metric = f"test {auc_label(task)}"
    for ms in summary.models:
        ranked = sorted(
            (c for c in ms.cells if math.isfinite(c.mean("test_auc"))),
            key=lambda c: -c.mean("test_auc"),
        )
        if not ranked:
            continue
        w = ranked[0]
        text = (
            f"**{ms.model}**: `{w.method}` has the highest mean {metric}"
            f" ({w.mean('test_auc'):.4f}, {_plural(w.n, 'seed')})"
        )
        if len(ranked) == 1:
            out.append(text + "; no other method has finished runs.")
            continue
        r = ranked[1]
        d = pair_cells(w, r, "test_auc")
        text += (
            f"; its lead over the runner-up `{r.method}` (Δ {fmt_diff(d)}, 95% CI over"
            f" {_plural(d.pairs, 'paired seed')}, paired p = {fmt_p(d.p_paired)}) is"
            f" {_verdict(d.p_paired)}."
        )
        mine = [
            x
            for x in diffs
            if x.model == ms.model and x.pairs and (condition is None or x.condition == condition)
        ]
        if baseline is not None and baseline not in (w.method, r.method):
            text += "".join(_against(x, "Against", baseline) for x in mine if x.method == w.method)
        # AutoLoss is what the product is about: where it stands, whatever won
        text += "".join(
            _against(x, f"`{x.method}` against", baseline or "")
            for x in mine
            if x.method in AUTOLOSS_METHODS
            and x.method != w.method
            and {w.method, r.method} != {baseline, x.method}  # said by the runner-up's test
        )
        out.append(text)
    return out


def _against(d: PairedDiff, lead: str, baseline: str) -> str:
    return (
        f" {lead} `{baseline}`: Δ {fmt_diff(d)} (paired p = {fmt_p(d.p_paired)},"
        f" Holm-adjusted {fmt_p(d.p_paired_holm)}), {_verdict(d.p_paired_holm)}."
    )


def _who(true_class: int, task: str) -> str:
    if task == "binary":
        return "positives" if true_class == 1 else "negatives"
    return f"class {true_class}"


def _segments_text(f: Favourite, task: str) -> str:
    """``hinge for ŷ ≤ 0.07, focal above`` when the top candidate changes along the grid (2-3
    pieces; more would be noise to read)."""
    if not 1 < len(f.segments) <= 3:
        return ""
    x = "ŷ" if task == "binary" else "p(true class)"
    parts = []
    for i, (name, _lo, hi) in enumerate(f.segments):
        if i == 0:
            parts.append(f"`{name}` for {x} ≤ {hi:.2f}")
        elif i == len(f.segments) - 1:
            parts.append(f"`{name}` above")
        else:
            parts.append(f"`{name}` up to {hi:.2f}")
    return "; " + ", ".join(parts)


def policy_sentence(label: str, maps: Sequence[PolicyMap], seeds: Sequence[int]) -> str:
    """What the controllers of one cell learnt (the candidate with the most α for each true
    class) and how much the seeds agree on it."""
    pm = average_maps(maps)
    k = len(pm.candidates)
    fav = favourites(pm)
    order = sorted(fav, reverse=pm.task == "binary")  # binary: positives first
    seeds_text = _plural(len(maps), "seed")
    head = f"**{label}** ({seeds_text}): "
    uniform = f"every α within {UNIFORM_TOLERANCE:.2f} of uniform, {1 / k:.2f}"
    if all(f.near_uniform for f in fav.values()):
        prefs = f"no preference learnt ({uniform}, for every label)"
    else:
        prefs = "; ".join(
            f"{_who(c, pm.task)}: no preference ({uniform})"
            if fav[c].near_uniform
            else f"{_who(c, pm.task)}: `{fav[c].candidate}` gets the most α (mean"
            f" {fav[c].alpha:.2f}{_segments_text(fav[c], pm.task)})"
            for c in order
        )
    if len(maps) == 1:
        return f"{head}{prefs}. One seed: whether other seeds agree is unknown."
    spread = widest_spread(pm)
    top = spread.std if spread is not None else 0.0
    per_seed = [favourites(m) for m in maps]
    differ = []
    for c in order:
        picks = [f[c].candidate for f in per_seed]
        if not fav[c].near_uniform and len(set(picks)) > 1:
            who = ", ".join(f"{s} `{p}`" for s, p in zip(seeds, picks))
            differ.append(f"{_who(c, pm.task)}: seed {who}")
    if spread is not None and spread.std > DISAGREEMENT_STD:
        # the disagreement first: the mean of disagreeing seeds is no finding of its own
        x = "ŷ" if pm.task == "binary" else "p(true class)"
        return (
            f"{head}the seeds disagree: the std of α across them reaches {spread.std:.2f}"
            f" (`{spread.candidate}` for {_who(spread.true_class, pm.task)} at {x} ="
            f" {spread.at:.2f})"
            + (f"; favourites per seed: {'; '.join(differ)}" if differ else "")
            + f". Their mean map, which no seed shows: {prefs}."
        )
    if differ:
        return (
            f"{head}{prefs}. The seeds disagree on the favourite ({'; '.join(differ)}), though"
            f" their α differ little (std across seeds at most {top:.2f})."
        )
    return f"{head}{prefs}. The {seeds_text} agree (std of α across seeds at most {top:.2f})."


def _in_short(page: HtmlPage, exp: Any, items: Sequence[str]) -> None:
    """The plain-language summary at the top of the page."""
    if not items:
        return
    page.heading("In short")
    page.bullets(items)
    page.paragraph(SEED_NOISE_NOTE.format(base=baseline_method(exp.methods) or "ce"))


def in_short_items(
    exp: Any,
    rows: Sequence[Any],
    summary: Summary,
    maps: dict[tuple[str, str, str], Maps],
    task: str,
) -> list[str]:
    """The winner per model (per condition) and whether it is beyond seed noise; what each
    controller learnt and whether its seeds agree (markdown sentences)."""
    baseline = baseline_method(exp.methods)
    items: list[str] = []
    if exp.grid:
        from autoloss.experiments.compare import condition_summaries

        conds = condition_summaries(exp, rows)
        for c in conds:
            c.summary.task = task
        diffs = paired_differences(conds, baseline)
        for cond in conds:
            for text in winner_sentences(
                cond.summary, diffs, baseline, task=task, condition=dict(cond.values)
            ):
                items.append(f"[{cond.label}] {text}")
    else:
        diffs = paired_differences([ConditionSummary({}, summary)], baseline)
        items += winner_sentences(summary, diffs, baseline, task=task)
    for (cname, model, method), loaded in maps.items():
        if isinstance(loaded, tuple):
            items.append(policy_sentence(_named(cname, f"{model} with {method}")[1], *loaded))
    return items


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


def _cell_maps(exp: Any, cells: Cells) -> dict[tuple[str, str, str], Maps]:
    """The policy maps of every cell whose runs saved a controller, in report order."""
    out: dict[tuple[str, str, str], Maps] = {}
    for cname in _condition_names(exp):
        for model in exp.models:
            for method in exp.methods:
                ctrls = [
                    (_seed(x), x.run_dir / "controller.pt")
                    for x in cells.get((cname, model, method), [])
                ]
                ctrls = [(s, p) for s, p in ctrls if p.is_file()]
                if ctrls:
                    out[(cname, model, method)] = load_maps(ctrls)
    return out


def _seed(rec: RunRecords) -> int:
    seed = rec.result.seed if rec.result else None
    return int(seed or rec.config.get("train", {}).get("seed") or 0)


def _policy_map_figures(
    page: HtmlPage, out: Path, exp: Any, maps: dict[tuple[str, str, str], Maps]
) -> None:
    page.heading("Policy maps")
    shown = 0
    for (cname, model, method), loaded in maps.items():
        suffix, title = _named(cname, f"{model} with {method}")
        shown += _policy_map_section(
            page,
            out,
            loaded,
            name=f"policy_map_{_slug(model)}-{_slug(method)}{suffix}.png",
            title=f"{title}: the controller's policy map",
            method=method,
        )
    if not shown:
        page.note("Policy maps: skipped: no run of this experiment saved a per-example controller.")


def _example_weight_figures(page: HtmlPage, out: Path, exp: Any, cells: Cells, task: str) -> None:
    """Per cell, the sample of the first seed whose run wrote ``example_weights.npz``; nothing
    at all (not even the heading) where no run did."""
    first: list[tuple[str, str, str, RunRecords]] = []
    for cname in _condition_names(exp):
        for model in exp.models:
            for method in exp.methods:
                recs = cells.get((cname, model, method), [])
                rec = next((x for x in recs if RunDir(x.run_dir).example_weights.is_file()), None)
                if rec is not None:
                    first.append((cname, model, method, rec))
    if not first:
        return
    page.heading("Per-example weights")
    for cname, model, method, rec in first:
        suffix, title = _named(cname, f"{model} with {method}")
        seed = f"seed {_seed(rec)}"
        _example_weights_section(
            page,
            out,
            read_example_weights(RunDir(rec.run_dir).example_weights),
            name=f"example_weights_{_slug(model)}-{_slug(method)}{suffix}.png",
            title=f"{title}: the weight of each sampled training row ({seed})",
            task=task,
            lead=f"**{title}** ({seed}): ",
        )


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
