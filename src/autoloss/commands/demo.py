"""``autoloss demo``: the whole product in a few minutes, on the embedded data.

DeepFM on MovieLens ml-latest-small (binary: rating >= 4) under two conditions side by side:
clean labels, and 30% of the training labels flipped (symmetric noise) with a clean validation
split, the setting where our measurements find that the choice of loss matters
(docs/results.md, "Where does loss search help?"). Methods: ``ce``, ``gce`` (a bounded loss made
for noisy labels), ``uniform`` (the fixed mixture of the paper's candidates) and ``autoloss``,
over 5 paired seeds. Prints the comparison table and a plain reading of it (the winner per
condition and whether it is beyond seed noise), and writes the report.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from autoloss.experiments.compare import experiment_from_config, prepare_experiment, run_experiment
from autoloss.train.config import RunConfig

DEMO_MODEL = "deepfm"
DEMO_METHODS = ("ce", "gce", "uniform", "autoloss")
DEMO_NOISE = (0.0, 0.3)  # data.label_noise of the two conditions (train split only)
DEMO_SEEDS = 5
DEMO_EPOCHS = 5
DEMO_JOBS = 1


def demo_config(epochs: int = DEMO_EPOCHS) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = None  # the embedded default, prepared on first use
    cfg.data.task = "binary"
    cfg.train.epochs = epochs
    cfg.train.progress = "off"
    cfg.train.log_every = 10  # 40 steps per epoch here: enough points for the probability plots
    # One torch thread: barely slower on an idle 2-core machine (3.4 s vs 2.8 s per run), but two
    # threads next to any other busy process spin-wait and run 10-25x slower (measured 89 s).
    cfg.train.num_threads = 1
    cfg.data.noise_mode = "symmetric"
    cfg.data.noise_on_valid = False  # a small clean validation set, as in docs/results.md
    return cfg


def plain(markdown: str) -> str:
    """A report sentence for the terminal: without ``**`` and backticks."""
    return re.sub(r"\*\*|`", "", markdown)


def run_demo(
    out: Path,
    *,
    seeds: int = DEMO_SEEDS,
    epochs: int = DEMO_EPOCHS,
    jobs: int = DEMO_JOBS,
) -> Path:
    """Run the demo into ``out``; returns the report's path."""
    from autoloss.report.contents import experiment_report_and_reading

    t0 = time.perf_counter()
    print(
        f"autoloss demo: {DEMO_MODEL} on the embedded MovieLens ml-latest-small (rating >= 4), "
        f"clean labels and {DEMO_NOISE[1]:.0%} flipped training labels (clean validation), "
        f"methods {', '.join(DEMO_METHODS)}, {seeds} seeds, up to {epochs} epochs each"
    )
    exp = experiment_from_config(
        demo_config(epochs),
        out,
        models=[DEMO_MODEL],
        methods=list(DEMO_METHODS),
        num_seeds=seeds,
        grid=[("data.label_noise", list(DEMO_NOISE))],
    )
    prepare_experiment(exp)
    outcome = run_experiment(exp, jobs=jobs, log=print, quiet_runs=True)
    print()
    print(outcome.table)
    report, reading = experiment_report_and_reading(out)
    print("Reading (paired t-tests over the seeds; p < 0.05 is beyond seed noise):")
    for sentence in reading:
        print(f"- {plain(sentence)}")
    print(f"results: {out / 'results.csv'}")
    print(f"table:   {out / 'table.md'}")
    print(f"report:  {report}   (open it in a browser)")
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return report
