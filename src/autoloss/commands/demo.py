"""``autoloss demo``: the whole product in a few minutes, on the embedded data.

DeepFM on MovieLens ml-latest-small (binary: rating >= 4), trained with ``ce``, ``uniform``,
``darts`` and ``autoloss`` over a few seeds; prints the comparison table and writes the report.
The defaults fit in 5 minutes on 2 CPU cores with room to spare (measured: see docs/results.md).
"""

from __future__ import annotations

import time
from pathlib import Path

from autoloss.experiments.compare import experiment_from_config, prepare_experiment, run_experiment
from autoloss.train.config import RunConfig

DEMO_MODEL = "deepfm"
DEMO_METHODS = ("ce", "uniform", "darts", "autoloss")
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
    return cfg


def run_demo(
    out: Path,
    *,
    seeds: int = DEMO_SEEDS,
    epochs: int = DEMO_EPOCHS,
    jobs: int = DEMO_JOBS,
) -> Path:
    """Run the demo into ``out``; returns the report's path."""
    from autoloss.report.contents import write_report

    t0 = time.perf_counter()
    print(
        f"autoloss demo: {DEMO_MODEL} on the embedded MovieLens ml-latest-small (rating >= 4), "
        f"methods {', '.join(DEMO_METHODS)}, {seeds} seeds, up to {epochs} epochs each"
    )
    exp = experiment_from_config(
        demo_config(epochs), out, models=[DEMO_MODEL], methods=list(DEMO_METHODS), num_seeds=seeds
    )
    prepare_experiment(exp)
    outcome = run_experiment(exp, jobs=jobs, log=print, quiet_runs=True)
    print()
    print(outcome.table)
    report = write_report(out)
    print(f"results: {out / 'results.csv'}")
    print(f"table:   {out / 'table.md'}")
    print(f"report:  {report}   (open it in a browser)")
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return report
