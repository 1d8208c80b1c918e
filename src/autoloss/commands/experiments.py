"""``autoloss compare``, ``report`` and ``demo``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from autoloss.commands.train import add_training_options, config_from_args
from autoloss.errors import ConfigError
from autoloss.experiments.compare import PAPER_METHODS, PAPER_MODELS, PAPER_SEEDS, Experiment
from autoloss.files import STALE_SECONDS, check_writable, remove_stale_temporaries


def _names(text: str | None, default: list[str], option: str) -> list[str]:
    """The comma-separated names of ``option``; ``default`` when it is not given. Given but
    empty (``--models ''``, ``--methods ,``) is refused: it is a mistake, not "the default"."""
    if text is None:
        return list(default)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{option} {text!r} names nothing: give NAME,... or leave it out")
    return names


#: Training options compare sets per run, and what to give instead.
PER_RUN_OPTIONS = {
    "--model": ("model__name", "model.name", "--models NAME,..."),
    "--loss": ("loss__method", "loss.method", "--methods NAME,..."),
}


def refuse_per_run_options(args: argparse.Namespace) -> None:
    """compare takes its models and methods from --models/--methods only: one line otherwise."""
    for flag, (dest, key, instead) in PER_RUN_OPTIONS.items():
        if getattr(args, dest, None) is not None:
            raise ConfigError(f"{flag} is not an option of compare: give {instead}")
        for item in args.overrides or []:
            if item.split("=", 1)[0].strip() == key:
                raise ConfigError(f"--set {key}: compare sets it per run: give {instead}")


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    """The grid that compare's options ``args`` describe (nothing written)."""
    from autoloss.experiments.compare import experiment_from_config
    from autoloss.experiments.grid import parse_grid

    refuse_per_run_options(args)
    return experiment_from_config(
        config_from_args(args),
        args.out,
        models=_names(args.models, list(PAPER_MODELS), "--models"),
        methods=_names(args.methods, list(PAPER_METHODS), "--methods"),
        num_seeds=args.seeds,
        grid=parse_grid(args.grid or []),
    )


#: compare options a command line with --plan may give (where and how the grids run; --jobs
#: replaces the plan's): every other option is the plan's, so the file stays the record.
PLAN_COMMAND_LINE = frozenset(
    {"func", "command", "plan", "dataset", "only", "out", "jobs", "executor", "address",
     "cpus_per_run", "gpus_per_run", "shard", "overwrite"}
)  # fmt: skip


class _PlanParser(argparse.ArgumentParser):
    """compare's options, read from a plan: a bad one is a ConfigError naming the plan."""

    plan_path: Path | None = None

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message}", path=self.plan_path)


def _plan_parser(path: Path) -> _PlanParser:
    p = _PlanParser(prog="autoloss compare", add_help=False)
    p.plan_path = path
    add_compare_options(p)
    return p


def plan_experiments(
    plan_path: str | Path,
    out: str | Path,
    *,
    datasets: dict[str, str] | None = None,
    only: list[str] | None = None,
) -> list[tuple[argparse.Namespace, Experiment]]:
    """Every grid of the plan file: its compare options and its experiment (nothing written;
    any bad grid fails here, before the first run)."""
    from autoloss.experiments.plan import load_plan, plan_runs

    plan = load_plan(plan_path)
    parser = _plan_parser(plan.path)
    grids = []
    for g in plan_runs(plan, out, datasets=datasets or {}, only=only or []):
        ns = parser.parse_args(g.argv)
        try:
            grids.append((ns, experiment_from_args(ns)))
        except ConfigError as exc:
            raise ConfigError(f"{plan.path}: grid {g.name}: {exc}") from None
    return grids


def _given_with_plan(args: argparse.Namespace) -> list[str]:
    """The options given beside --plan that the plan owns (their values differ from the
    defaults), as the command line spells them."""
    parser = _plan_parser(Path("."))
    defaults = vars(parser.parse_args(["--out", "-"]))
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return [
        flags.get(dest, dest)
        for dest, value in vars(args).items()
        if dest not in PLAN_COMMAND_LINE and dest in defaults and value != defaults[dest]
    ]


def _compare_plan(args: argparse.Namespace) -> int:
    import subprocess
    import sys

    from autoloss.experiments.plan import datasets_to_prepare, load_plan, plan_runs

    given = _given_with_plan(args)
    if given:
        raise ConfigError(
            f"{', '.join(given)} with --plan: the plan file gives the grids' options "
            "(edit it, or copy it); the command line gives --out, --jobs, --dataset, --only and "
            "where the runs train"
        )
    datasets: dict[str, str] = {}
    for item in args.dataset or []:
        name, sep, where = item.partition("=")
        if not sep or not name.strip() or not where.strip():
            raise ConfigError(f"--dataset {item}: expected NAME=PATH")
        datasets[name.strip()] = where.strip()
    only = _names(args.only, [], "--only") if args.only is not None else []
    check_writable(Path(args.out))
    grids = plan_experiments(args.plan, args.out, datasets=datasets, only=only)
    plan = load_plan(args.plan)
    planned = plan_runs(plan, args.out, datasets=datasets, only=only)
    for where, options in datasets_to_prepare(plan, planned, args.out, datasets):
        if not (where / "meta.json").is_file():
            cmd = [sys.executable, "-m", "autoloss", "prepare", *options, "--out", str(where)]
            print(f"autoloss compare: preparing {where}: {' '.join(options)}", flush=True)
            if subprocess.run(cmd, check=False).returncode != 0:
                raise ConfigError(f"autoloss prepare {' '.join(options)} failed", path=where)
    code = 0
    for ns, exp in grids:
        for dest in PLAN_COMMAND_LINE - {"plan", "dataset", "only", "out", "func", "command"}:
            if dest != "jobs" or args.jobs is not None:
                setattr(ns, dest, getattr(args, dest))
        print(f"\n== grid {exp.out.name} of {args.plan}: {exp.out}", flush=True)
        code = max(code, _run_compare(ns, exp))
    return code


def cmd_compare(args: argparse.Namespace) -> int:
    if getattr(args, "plan", None):
        return _compare_plan(args)
    if args.dataset or args.only is not None:
        raise ConfigError("--dataset and --only go with --plan")
    check_writable(Path(args.out))  # before any work: under a file, read-only: one line
    return _run_compare(args, experiment_from_args(args))


def _run_compare(args: argparse.Namespace, exp: Experiment) -> int:
    from autoloss.experiments.compare import parse_shard, prepare_experiment, run_experiment
    from autoloss.experiments.executors import make_executor

    check_writable(Path(args.out))  # before any work: under a file, read-only: one line
    shard = parse_shard(args.shard) if args.shard is not None else None
    cpus = args.cpus_per_run
    if cpus is None and args.executor == "ray":  # a task reserves the threads its run uses
        cpus = float(exp.base.train.num_threads)
    executor = make_executor(  # before anything is written: a missing Ray is one line
        args.executor,
        jobs=args.jobs,
        address=args.address,
        cpus_per_run=cpus,
        gpus_per_run=args.gpus_per_run,
    )
    prepare_experiment(exp, overwrite=args.overwrite)
    remove_stale_temporaries(exp.out, min_age=STALE_SECONDS)  # shared: only those of no live write
    outcome = run_experiment(exp, executor=executor, shard=shard)
    print()
    print(outcome.table)
    print(f"results: {exp.out / 'results.csv'}\ntable: {exp.out / 'table.md'}")
    if outcome.elsewhere:  # not failures: the process that finishes last writes complete tables
        print(
            f"autoloss compare: {len(outcome.elsewhere)} runs left to other processes training"
            f" them ({', '.join(sorted(outcome.elsewhere))})"
        )
    if outcome.failed:
        names = ", ".join(sorted(outcome.failed))
        print(
            f"autoloss compare: {len(outcome.failed)} runs failed ({names}); rerun the command to retry them"
        )
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autoloss.report.contents import REPORT_DIR, write_report

    out = Path(args.out) if args.out else None
    if out is not None or Path(args.path).is_dir():  # before any work: one line
        check_writable(out or Path(args.path) / REPORT_DIR)
    path = write_report(Path(args.path), out)
    print(f"report: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from autoloss.commands.demo import run_demo

    run_demo(Path(args.out), seeds=args.seeds, epochs=args.epochs, jobs=args.jobs)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare models × loss methods × seeds, with a significance table",
        description=(
            "Train a grid of models × loss methods × seeds (× conditions, --grid) on one dataset "
            "(resumable) and write results.csv and table.md (mean ± std, Welch and paired "
            "t-tests). Every training option of 'autoloss train' but --model and --loss applies "
            "to each run; --seed is the first seed. With --plan FILE: every grid of an "
            "experiment plan (docs/grids.md, 'Plan files'), each into OUT/<grid>."
        ),
    )
    p.add_argument(
        "--plan",
        metavar="FILE",
        help=(
            "an experiment plan (YAML: datasets, defaults, conditions, experiments; "
            "docs/grids.md): train each of its grids into OUT/<condition>-<experiment>; the "
            "grids' options are the plan's (given here too: one line, exit 2)"
        ),
    )
    p.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="with --plan: where the plan's dataset NAME is (repeatable)",
    )
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="with --plan: only these grids (<condition>-<experiment>) or conditions",
    )
    add_compare_options(p)
    p.set_defaults(func=cmd_compare)
    _register_others(sub)


def add_compare_options(p: argparse.ArgumentParser) -> None:
    """compare's grid, execution and training options."""
    p.add_argument(
        "--models",
        metavar="NAMES",
        help=f"comma-separated models (default {','.join(PAPER_MODELS)})",
    )
    p.add_argument(
        "--methods",
        metavar="NAMES",
        help=f"comma-separated loss methods (default {','.join(PAPER_METHODS)})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=PAPER_SEEDS,
        metavar="N",
        help=f"number of seeds: --seed, --seed+1, ... (default {PAPER_SEEDS})",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help=(
            "a setting (as --set takes it) as a further grid dimension, e.g. "
            "--grid data.label_noise=0,0.2,0.4 (repeatable; every combination is a condition). "
            "Values holding commas (list settings such as loss.candidates or model.mlp) are "
            "separated by ';': --grid 'loss.candidates=focal,kl;focal,kl,hinge,ce'"
        ),
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="experiment directory (rerun the command to resume)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="runs trained in parallel worker processes (default 1; --executor local)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help=(
            "where runs train: local (this machine, --jobs processes; default) or ray (one Ray "
            "task per run, on a local Ray instance or the cluster at --address; needs "
            "'autoloss-rec[ray]' and --out on storage every node sees)"
        ),
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help="--executor ray: the Ray cluster (ray.init address; default RAY_ADDRESS, else a new local instance)",
    )
    p.add_argument(
        "--cpus-per-run",
        type=float,
        metavar="N",
        help="--executor ray: CPUs each run asks for (default: the runs' --threads)",
    )
    p.add_argument(
        "--gpus-per-run",
        type=float,
        metavar="N",
        help="--executor ray: GPUs each run asks for (default 0)",
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        help=(
            "train only shard I of N of the grid (1 <= I <= N: runs I, I+N, I+2N, ... in the "
            "grid's fixed order), e.g. one per job of a Slurm array; every shard writes into the "
            "same --out and the last to finish writes complete tables"
        ),
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace runs made with other settings in --out"
    )
    add_training_options(p, with_out=False, hidden=tuple(PER_RUN_OPTIONS))


def _register_others(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="plots and report.html for a run or an experiment",
        description="Write PNG plots and a self-contained report.html for a run or experiment directory.",
    )
    p.add_argument(
        "path", metavar="RUN_DIR|EXP_DIR", help="a run directory or an experiment directory"
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default PATH/report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "demo",
        help="compare ce, gce, uniform and autoloss on clean and noisy labels, with a report",
        description=(
            "On the embedded MovieLens data (nothing downloaded): DeepFM with ce, gce, uniform "
            "and autoloss over a few seeds, on clean labels and with 30% of the training labels "
            "flipped (clean validation); the comparison table, a plain reading of it and the "
            "report."
        ),
    )
    from autoloss.commands.demo import DEMO_EPOCHS, DEMO_JOBS, DEMO_SEEDS

    p.add_argument(
        "--out", default="demo-out", metavar="DIR", help="output directory (default demo-out)"
    )
    p.add_argument(
        "--seeds", type=int, default=DEMO_SEEDS, metavar="N", help=f"seeds (default {DEMO_SEEDS})"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=DEMO_EPOCHS,
        metavar="N",
        help=f"max epochs per run (default {DEMO_EPOCHS})",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=DEMO_JOBS,
        metavar="N",
        help=f"parallel runs (default {DEMO_JOBS})",
    )
    p.set_defaults(func=cmd_demo)
