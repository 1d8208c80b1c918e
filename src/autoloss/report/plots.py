"""The report's figures (matplotlib, object API: no pyplot state, works headless).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save_png` writes it. Colours are
stable: a method or a candidate loss has the same colour in every figure.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from autoloss.experiments.tables import PairedDiff, Summary, auc_label, logloss_label
from autoloss.files import atomic_output
from autoloss.report.records import Curve

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_METHOD_ORDER = (
    "ce",
    "focal",
    "kl",
    "hinge",
    "mse",
    "uniform",
    "search",
    "darts",
    "slf",
    "autoloss",
    "autoloss-soft",
)
_CANDIDATE_ORDER = ("focal", "kl", "hinge", "ce", "mse")
DPI = 110


def method_color(method: str) -> str:
    if method == "autoloss":
        return "#d62728"  # AutoLoss stands out in red everywhere
    order = [m for m in _METHOD_ORDER if m != "autoloss"]
    i = order.index(method) if method in order else sum(map(ord, method))
    return [c for c in _PALETTE if c != "#d62728"][i % 9]


def candidate_color(name: str) -> str:
    i = _CANDIDATE_ORDER.index(name) if name in _CANDIDATE_ORDER else 5 + sum(map(ord, name))
    return _PALETTE[i % len(_PALETTE)]


_LINE_STYLES: tuple[Any, ...] = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def candidate_style(name: str, position: int, count: int, points: int) -> dict[str, Any]:
    """Colour, line style and hollow marker of a candidate's line, so that lines lying on top of
    each other stay distinguishable (a mixture starts uniform: every line at 1/K). Markers are
    staggered along x by ``position`` (of ``count`` lines over ``points`` points)."""
    i = _CANDIDATE_ORDER.index(name) if name in _CANDIDATE_ORDER else 5 + sum(map(ord, name))
    step = max(1, points // 8)
    return {
        "color": candidate_color(name),
        "ls": _LINE_STYLES[i % len(_LINE_STYLES)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "markevery": ((position * step) // max(1, count), step),
        "ms": 6,
        "mfc": "none",
        "mew": 1.3,
    }


def save_png(fig: Figure, path: Path) -> Path:
    with atomic_output(path, what="the plot") as fh:
        fig.savefig(fh, dpi=DPI, format="png")
    return path


def _rows_axis(ax: object) -> None:
    ax.set_xlabel("training rows seen")  # type: ignore[attr-defined]
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # type: ignore[attr-defined]
    ax.grid(True, alpha=0.3)  # type: ignore[attr-defined]


def _probability_axis(ax: Any, curve: Curve, keys: Sequence[str]) -> str:
    """Probabilities on [0, 1]; zoomed when they move less than 0.15 (returns a title suffix)."""
    vals = np.concatenate([curve.values[k] for k in keys if k in curve.values] or [np.zeros(1)])
    vals = vals[np.isfinite(vals)]
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    if hi - lo >= 0.15:
        ax.set_ylim(-0.02, 1.02)
        return ""
    pad = max(0.01, 0.25 * (hi - lo))
    ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    return " (y axis zoomed)"


def learning_curves(curves: Mapping[str, Curve], *, title: str, task: str = "binary") -> Figure:
    """Validation AUC and logloss against training rows, one line per label (method).

    With several seeds a curve is their mean and a band shows ± one standard deviation.
    """
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_auc, ax_ll = fig.subplots(1, 2)
    for label, c in curves.items():
        color = method_color(label)
        for ax, key in ((ax_auc, "auc"), (ax_ll, "logloss")):
            if not c.has(key):
                continue
            ax.plot(c.rows, c.values[key], marker="o", ms=3, lw=1.5, color=color, label=label)
            s = c.std.get(key)
            if s is not None and np.isfinite(s).any() and c.n is not None and c.n.max() > 1:
                ax.fill_between(
                    c.rows, c.values[key] - s, c.values[key] + s, color=color, alpha=0.15, lw=0
                )
    ax_auc.set_ylabel(f"validation {auc_label(task)}")
    ax_ll.set_ylabel(f"validation {logloss_label(task)} (nats)")
    ax_auc.set_title("validation AUC (higher is better)")
    ax_ll.set_title("validation logloss (lower is better)")
    for ax in (ax_auc, ax_ll):
        _rows_axis(ax)
        ax.legend(fontsize=8, loc="best")
    _suptitle(fig, title)
    return fig


def candidate_evolution(
    curve: Curve,
    overall: Sequence[str],
    per_class: Mapping[int, Sequence[str]],
    *,
    title: str,
    shared: bool = False,
) -> Figure:
    """Mean probability of each candidate over training: overall with τ, and per true class.

    ``overall`` are ``p_<cand>`` keys, ``per_class[c]`` the ``p_<cand>_y<c>`` keys of class c.
    Binary: one panel, positives solid and negatives dashed. Multi-class: one panel per candidate,
    one line per class. No ``per_class``: the overall panel alone (``shared``: the method has one
    weight vector for every example, e.g. darts, so there is nothing per class to show). τ, when
    logged, has its own axis on the right.
    """
    binary = set(per_class) <= {0, 1}
    cands = [k[2:] for k in overall]
    n_right = 0 if not per_class else 1 if binary else len(cands)
    width = 8.0 if not per_class else 5.5 * (1 + n_right) if binary else 4.0 * (1 + n_right)
    fig = Figure(figsize=(width, 5.0), layout="constrained")
    axes = fig.subplots(1, 1 + n_right, squeeze=False)[0]
    ax = axes[0]
    n = len(curve.rows)
    for i, key in enumerate(overall):
        style = candidate_style(key[2:], i, len(overall), n)
        ax.plot(curve.rows, curve.values[key], lw=1.8, label=key[2:], **style)
    ax.set_ylabel("mean probability of the candidate")
    what = "one weight vector for all examples" if shared else "all training examples"
    ax.set_title(what + _probability_axis(ax, curve, overall))
    _rows_axis(ax)
    lines, labels = ax.get_legend_handles_labels()
    if curve.has("tau"):
        twin = ax.twinx()
        (t,) = twin.plot(
            curve.rows, curve.values["tau"], color="black", ls=":", lw=1.2, label="τ (right axis)"
        )
        twin.set_ylabel("Gumbel-softmax temperature τ")
        twin.set_ylim(0, max(1.05, float(np.nanmax(curve.values["tau"])) * 1.05))
        lines.append(t)
        labels.append("τ (right axis)")
    # below the axes: τ runs along the top, where a legend inside would hide it
    ax.legend(lines, labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    if per_class and binary:
        ax = axes[1]
        for i, cand in enumerate(cands):
            for c, ls, name in ((1, "-", "y=1 (positive)"), (0, "--", "y=0 (negative)")):
                key = f"p_{cand}_y{c}"
                if key in curve.values:
                    style = candidate_style(cand, 2 * i + (c == 0), 2 * len(cands), n)
                    style["ls"] = ls  # the line style tells the class here, the marker the loss
                    ax.plot(curve.rows, curve.values[key], lw=1.6, label=f"{cand}, {name}", **style)
        ax.set_ylabel("mean probability of the candidate")
        zoom = _probability_axis(ax, curve, [k for ks in per_class.values() for k in ks])
        ax.set_title("positives (solid) vs negatives (dashed)" + zoom)
        _rows_axis(ax)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    elif per_class:
        for ax, cand in zip(axes[1:], cands):
            for c in per_class:
                key = f"p_{cand}_y{c}"
                if key in curve.values:
                    ax.plot(curve.rows, curve.values[key], lw=1.4, label=f"class {c}")
            ax.set_ylabel(f"mean probability of {cand}")
            zoom = _probability_axis(ax, curve, [f"p_{cand}_y{c}" for c in per_class])
            ax.set_title(f"{cand}: by true class{zoom}")
            _rows_axis(ax)
            ax.legend(fontsize=7, loc="best")
    _suptitle(fig, title)
    return fig


def policy_map(
    grid: np.ndarray,
    alpha: Mapping[int, np.ndarray],
    candidates: Sequence[str],
    *,
    title: str,
    task: str = "binary",
    spread: Mapping[int, np.ndarray] | None = None,
) -> Figure:
    """The controller's probability of each candidate as a function of the prediction.

    ``alpha[c]`` is (G, K): for true class c, at each grid value. Binary: x is ŷ = P(y=1).
    Multi-class: x is the predicted probability of the true class (the rest spread evenly).
    ``spread[c]`` (G, K), when given, is drawn as a ± band (e.g. over seeds).
    """
    classes = sorted(alpha)
    cols = min(len(classes), 3 if len(classes) > 2 else 2)
    nrows = math.ceil(len(classes) / cols)
    fig = Figure(figsize=(5.2 * cols, 4.0 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, c in zip(axes, classes):
        a = alpha[c]
        for k, name in enumerate(candidates):
            style = candidate_style(name, k, len(candidates), len(grid))
            ax.plot(grid, a[:, k], lw=2, label=name, **style)
            if spread is not None and c in spread:
                s = spread[c][:, k]
                ax.fill_between(
                    grid, a[:, k] - s, a[:, k] + s, color=candidate_color(name), alpha=0.15, lw=0
                )
        if task == "binary":
            ax.set_xlabel("prediction ŷ = P(y=1)")
            easy = (
                "easy negatives at left, hard at right"
                if c == 0
                else "hard positives at left, easy at right"
            )
            ax.set_title(f"true label y={c} ({easy})", fontsize=9)
        else:
            ax.set_xlabel(f"predicted probability of the true class {c}")
            ax.set_title(f"true class {c}")
        ax.set_ylabel("controller probability α of the candidate")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(classes) :]:
        ax.set_visible(False)
    _suptitle(fig, title)
    return fig


def metric_errorbars(summary: Summary) -> Figure:
    """Test AUC and logloss per method, mean ± std over seeds, one colour per model."""
    methods = list(dict.fromkeys(c.method for ms in summary.models for c in ms.cells))
    fig = Figure(figsize=(max(7.0, 1.1 * len(methods) + 3), 7.5), layout="constrained")
    ax_auc, ax_ll = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(methods))
    width = 0.6 / max(1, len(summary.models))
    for i, ms in enumerate(summary.models):
        offset = (i - (len(summary.models) - 1) / 2) * width
        color = _PALETTE[i % len(_PALETTE)]
        for ax, metric in ((ax_auc, "test_auc"), (ax_ll, "test_logloss")):
            xs, ys, es = [], [], []
            for j, method in enumerate(methods):
                c = ms.cell(method)
                if c is None:
                    continue
                xs.append(x[j] + offset)
                ys.append(c.mean(metric))
                sd = c.std(metric)
                es.append(0.0 if math.isnan(sd) else sd)
            n = max((c.n for c in ms.cells), default=0)
            ax.errorbar(
                xs, ys, yerr=es, fmt="o", capsize=4, color=color, label=f"{ms.model} ({n} seeds)"
            )
    ax_auc.set_ylabel(f"test {auc_label(summary.task)}")
    ax_ll.set_ylabel(f"test {logloss_label(summary.task)} (nats)")
    ax_auc.set_title("test AUC per method (mean ± std over seeds; higher is better)")
    ax_ll.set_title("test logloss per method (mean ± std over seeds; lower is better)")
    ax_ll.set_xticks(x, methods, rotation=30, ha="right")
    ax_ll.set_xlabel("loss method")
    for ax in (ax_auc, ax_ll):
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig


#: Axis labels (with units) of grid keys the data conditions use; others show the key itself.
GRID_AXIS_LABELS = {
    "data.label_noise": "label noise rate (probability that a training label is hit)",
    "data.pos_rate": "positive rate after subsampling (fraction of rows)",
    "data.noise_seed": "seed of the noise",
    "data.noise_mode": "label noise mode",
    "data.noise_on_valid": "noise also on the valid split",
}


def grid_differences(
    diffs: Sequence[PairedDiff],
    *,
    models: Sequence[str],
    x_key: str,
    x_values: Sequence[str],
    x_label: str,
    positions: Sequence[float] | None = None,
    title: str,
    task: str = "binary",
) -> Figure:
    """Test-AUC difference to the baseline against one grid key: one panel per model, one line
    per method, mean and 95% interval of the per-seed differences (:class:`PairedDiff`).

    ``diffs`` are those of one combination of the other grid keys; ``x_values`` the texts of
    ``x_key``'s values (``PairedDiff.condition[x_key]``), drawn at ``positions`` (a numeric
    key) or as evenly spaced categories.
    """
    models = [m for m in models if any(d.model == m for d in diffs)] or list(models[:1])
    cols = min(len(models), 3)
    nrows = math.ceil(len(models) / cols)
    fig = Figure(figsize=(5.4 * cols, 4.3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    xs = np.asarray(positions if positions is not None else range(len(x_values)), dtype=float)
    span = float(xs.max() - xs.min()) if len(xs) > 1 else 1.0
    methods = list(dict.fromkeys(d.method for d in diffs))
    baseline = diffs[0].baseline if diffs else "ce"
    for ax, model in zip(axes, models):
        ax.axhline(0.0, color="black", lw=1.0, ls="--", label=f"{baseline} (zero difference)")
        for i, method in enumerate(methods):
            dodge = (i - (len(methods) - 1) / 2) * 0.012 * span
            px, py, pe, pairs = [], [], [], []
            for x, text in zip(xs, x_values):
                d = next(
                    (
                        d
                        for d in diffs
                        if d.model == model
                        and d.method == method
                        and d.condition.get(x_key) == text
                        and d.pairs > 0
                    ),
                    None,
                )
                if d is None:
                    continue
                px.append(x + dodge)
                py.append(d.mean)
                pe.append(0.0 if math.isnan(d.half_width) else d.half_width)
                pairs.append(d.pairs)
            if not px:
                continue
            ax.errorbar(
                px,
                py,
                yerr=pe,
                fmt="-o",
                ms=4,
                lw=1.5,
                capsize=3,
                color=method_color(method),
                label=f"{method} ({_seed_range(pairs)} seeds)",
            )
        if positions is None:
            ax.set_xticks(xs, list(x_values))
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"Δ test {auc_label(task)} vs {baseline} (absolute AUC)")
        ax.set_title(model)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    _suptitle(fig, title)
    return fig


# ---------------------------------------------------------------------- per-example weights
#: A total weight below this (the batch's mean is 1) counts as switched off (``reweight.OFF``).
WEIGHT_OFF = 0.1
_WEIGHT_BINS = 20  # equal-width bins of the prediction for the mean line
_MIN_BIN_ROWS = 5  # a bin with fewer rows draws no mean point (too noisy to read)
_SCATTER_POINTS = 3000  # per panel at most, shared evenly by its groups
_GROUP_COLORS = {"clean": "#1f77b4", "flipped": "#d62728", "all rows": "#7f7f7f"}


@dataclass(frozen=True)
class WeightGroup:
    """The rows of an ``example_weights.npz`` sample that one line shows: ``clean``,
    ``flipped`` or ``all rows``, with their predictions (of the given label) and total weights."""

    name: str
    prediction: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.weight)

    @property
    def mean(self) -> float:
        return float(np.mean(self.weight, dtype=np.float64)) if len(self) else math.nan

    @property
    def off_share(self) -> float:
        """The share of the rows switched off (total weight < :data:`WEIGHT_OFF`)."""
        return float(np.mean(self.weight < WEIGHT_OFF)) if len(self) else math.nan


def knows_flips(arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether the sample's run had label noise, so that its ``flipped`` rows are known."""
    return "flipped" in arrays and bool(np.asarray(arrays.get("knows_flips", False)))


def binary_labels(arrays: Mapping[str, np.ndarray]) -> bool:
    label = np.asarray(arrays["label"])
    return bool(np.all((label == 0) | (label == 1)))


def weight_groups(
    arrays: Mapping[str, np.ndarray], rows: np.ndarray | None = None
) -> list[WeightGroup]:
    """The sample's ``rows`` (a boolean mask; all by default) as clean and flipped groups when
    the run knows its flips, else as one group, ``all rows``. Empty groups are left out, and
    rows with a non-finite prediction or weight (a diverged run) dropped."""
    pred = np.asarray(arrays["prediction"], dtype=np.float64)
    weight = np.asarray(arrays["weight"], dtype=np.float64)
    keep = np.isfinite(pred) & np.isfinite(weight)
    if rows is not None:
        keep &= rows
    if knows_flips(arrays):
        flipped = np.asarray(arrays["flipped"], dtype=bool)
        parts = [("clean", keep & ~flipped), ("flipped", keep & flipped)]
    else:
        parts = [("all rows", keep)]
    return [WeightGroup(name, pred[m], weight[m]) for name, m in parts if m.any()]


def share_text(share: float) -> str:
    """A share as a whole percentage; ``<1%`` (``>99%``) rather than a misleading 0% (100%)."""
    if 0 < share < 0.005:
        return "<1%"
    if 0.995 <= share < 1:
        return ">99%"
    return f"{share:.0%}"


def example_weights_figure(
    arrays: Mapping[str, np.ndarray], *, title: str, task: str | None = None
) -> Figure:
    """The total weight of each sampled training row against the predicted probability of its
    given label (the arrays of ``example_weights.npz``, :mod:`autoloss.train.example_weights`).

    Binary (``task``, or labels all in {0, 1}): positives and negatives side by side. Multi-class:
    one panel, every class. Each panel: a light scatter of a seeded subsample and the mean weight
    per prediction bin, clean and flipped rows apart where the run knows its flips; the dashed
    line at 1 is the weight CE gives every row. Low predictions are rows whose given label the
    model doubts (hard, or flipped).
    """
    binary = binary_labels(arrays) if task is None else task == "binary"
    panels = _weight_panels(arrays, binary)
    fig = Figure(figsize=(5.8 * len(panels), 5.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    rng = np.random.default_rng(0)  # the same points in every report of the same sample
    top = _weight_top(arrays)
    for ax, (what, x_label, rows) in zip(axes, panels):
        groups = weight_groups(arrays, rows)
        _weight_panel(ax, groups, rng, top=top)
        ax.set_title(f"{what}: {sum(map(len, groups)):,} rows", fontsize=9)
        ax.set_xlabel(x_label)
    _suptitle(fig, title)
    return fig


def _weight_panels(
    arrays: Mapping[str, np.ndarray], binary: bool
) -> list[tuple[str, str, np.ndarray]]:
    """(title, x label, row mask) of each panel."""
    label = np.asarray(arrays["label"])
    if not binary:
        given = "predicted probability of the given class"
        return [("all classes", given, np.ones(len(label), dtype=bool))]
    given = "predicted probability of the given label"
    return [
        ("given label 1 (positives)", f"{given}, ŷ", label == 1),
        ("given label 0 (negatives)", f"{given}, 1 − ŷ", label == 0),
    ]


def _weight_top(arrays: Mapping[str, np.ndarray]) -> float:
    """The y axis's top, shared by the panels: every weight shows, and the line at 1."""
    w = np.asarray(arrays["weight"], dtype=np.float64)
    w = w[np.isfinite(w)]
    return max(1.2, float(w.max()) * 1.05 if w.size else 0.0)


def _weight_panel(
    ax: Axes, groups: Sequence[WeightGroup], rng: np.random.Generator, *, top: float
) -> None:
    ax.axhline(1.0, color="black", lw=1.0, ls="--", label="1: CE's weight for every row")
    cap = _SCATTER_POINTS // max(1, len(groups))
    for g in groups:
        color = _GROUP_COLORS.get(g.name, _PALETTE[0])
        shown = rng.permutation(len(g))[:cap]
        ax.scatter(g.prediction[shown], g.weight[shown], s=6, color=color, alpha=0.2, lw=0)
        x, mean = _binned_mean(g.prediction, g.weight)
        off = f"{share_text(g.off_share)} switched off (< {WEIGHT_OFF:g})"
        label = f"{g.name} ({len(g):,} rows): mean per bin; {off}"
        ax.plot(x, mean, "-o", ms=3.5, lw=2, color=color, label=label)
    if not groups:
        ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.03 * top, top)
    ax.set_ylabel("total weight of the row (the batch's mean is 1)")
    ax.grid(True, alpha=0.3)
    # below the axes: a legend inside would hide points wherever they lie
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)


def _binned_mean(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``w`` in equal-width bins of ``x`` on [0, 1], at the bins' centres (bins with
    fewer than ``_MIN_BIN_ROWS`` rows left out)."""
    idx = np.clip((x * _WEIGHT_BINS).astype(int), 0, _WEIGHT_BINS - 1)
    n = np.bincount(idx, minlength=_WEIGHT_BINS)
    total = np.bincount(idx, weights=w, minlength=_WEIGHT_BINS)
    ok = n >= _MIN_BIN_ROWS
    centres = (np.arange(_WEIGHT_BINS) + 0.5) / _WEIGHT_BINS
    return centres[ok], total[ok] / n[ok]


def _seed_range(pairs: Sequence[int]) -> str:
    lo, hi = min(pairs), max(pairs)
    return str(hi) if lo == hi else f"{lo}–{hi}"


def _suptitle(fig: Figure, title: str) -> None:
    """The figure's title, wrapped to the figure's width (a long one is not cut at the edges)."""
    chars = max(20, int(fig.get_figwidth() * 12))  # ~12 characters per inch at the title's size
    fig.suptitle(textwrap.fill(title, chars))
