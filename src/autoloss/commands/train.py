"""``autoloss train``, ``evaluate``, ``predict`` and ``export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig

if TYPE_CHECKING:
    from autoloss.train.result import RunResult

# flag -> (dotted config key, type, metavar, help). Every other setting: --set key=value.
TRAINING_FLAGS: dict[str, tuple[str, type, str, str]] = {
    "--data": ("data.path", str, "PATH", "encoded dataset directory (default: embedded MovieLens)"),
    "--task": ("data.task", str, "TASK", "task of the embedded default: binary | multiclass"),
    "--model": (
        "model.name",
        str,
        "NAME",
        "model name (lr, fm, deepfm, ipnn, nfm, autoint, widedeep, dcn, dcnv2, xdeepfm)",
    ),
    "--loss": (
        "loss.method",
        str,
        "METHOD",
        "loss method: ce, focal, kl, hinge, mse, gce, mae, tce (one fixed loss), uniform, "
        "weights:a,b,..., search, darts, slf, autoloss-soft, autoloss, reweight (per-example "
        "weights)",
    ),
    "--candidates": ("loss.candidates", str, "NAMES", "candidate losses, e.g. focal,kl,hinge,ce"),
    "--epochs": ("train.epochs", int, "N", "maximum epochs"),
    "--patience": ("train.patience", int, "N", "early-stopping patience (validation AUC)"),
    "--batch-size": ("optim.batch_size", int, "N", "training batch size"),
    "--lr": ("optim.lr", float, "LR", "learning rate of the recommender"),
    "--embed-dim": ("model.embed_dim", int, "N", "embedding size"),
    "--mlp": ("model.mlp", str, "SIZES", "hidden layer sizes, e.g. 128,128"),
    "--dropout": ("model.dropout", float, "P", "dropout of MLP layers"),
    "--seed": ("train.seed", int, "N", "random seed"),
    "--device": ("train.device", str, "DEVICE", "auto | cpu | cuda | cuda:N"),
    "--threads": (
        "train.num_threads",
        int,
        "N",
        "CPU threads of a run (default 0 = auto: train, torch's count for this machine; compare, "
        "1 per run); results depend on it, config.yaml records it",
    ),
    "--controller": ("loss.controller", str, "PATH", "a saved controller.pt to transfer (frozen)"),
    "--update-every": ("loss.update_every", int, "N", "controller update frequency f"),
    "--mode": ("loss.mode", str, "MODE", "hypergradient: first-order | unrolled"),
    "--xi": ("loss.xi", float, "STEP", "virtual step size of the unrolled hypergradient"),
    "--search-trials": ("loss.search_trials", int, "N", "trials of --loss search"),
    "--eval-every": (
        "train.eval_every_steps",
        int,
        "N",
        "validate every N steps (0 = every epoch)",
    ),
    "--max-steps": ("train.max_steps", int, "N", "stop after N steps (0 = no limit)"),
    "--progress": ("train.progress", str, "WHEN", "progress bar: auto | on | off"),
}

#: Settings the ``--set`` help takes its example from, in order of preference (any int setting
#: of the config if none of them exists any more).
_SET_EXAMPLE_KEYS = ("model.embed_dim", "train.log_every", "optim.batch_size")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def set_example() -> str:
    """``KEY=VALUE`` of a real setting of :class:`RunConfig` (twice its default), for the help
    of ``--set``: taken from the config, so the example cannot go stale."""
    flat = _flat(RunConfig().to_dict())
    ints = [k for k, v in flat.items() if type(v) is int and v > 0]
    key = next((k for k in _SET_EXAMPLE_KEYS if k in ints), ints[0])
    return f"{key}={2 * flat[key]}"


def add_training_options(
    p: argparse.ArgumentParser, *, with_out: bool = True, hidden: tuple[str, ...] = ()
) -> None:
    """The options of ``autoloss train``; flags in ``hidden`` are parsed but not shown (a
    command that refuses them says why)."""
    g = p.add_argument_group("training options")
    g.add_argument(
        "--config", metavar="PATH", help="YAML config file (a run's config.yaml repeats that run)"
    )
    for flag, (key, kind, metavar, text) in TRAINING_FLAGS.items():
        g.add_argument(
            flag,
            dest=key.replace(".", "__"),
            type=kind,
            default=None,
            metavar=metavar,
            help=argparse.SUPPRESS if flag in hidden else text,
        )
    g.add_argument(
        "--hard",
        dest="loss__hard",
        action="store_const",
        const=True,
        default=None,
        help="straight-through hard Gumbel samples",
    )
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"any config setting, e.g. --set {set_example()} (repeatable; the keys: a run's "
        "config.yaml)",
    )
    if with_out:
        g.add_argument(
            "--out",
            metavar="DIR",
            help="run directory (default runs/<model>-<loss>-s<seed>-<time>)",
        )


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """The run's configuration: ``--config`` (or ``base``, or the defaults), then the flags and
    ``--set`` overrides the user gave, in that order."""
    if getattr(args, "config", None):
        cfg = RunConfig.from_yaml(args.config)
    else:
        cfg = base.copy() if base is not None else RunConfig()
    for flag, (key, _kind, _metavar, _text) in TRAINING_FLAGS.items():
        value = getattr(args, key.replace(".", "__"), None)
        if value is not None:
            cfg.set(key, value, source=flag)
    if getattr(args, "loss__hard", None):
        cfg.loss.hard = True
    for item in getattr(args, "overrides", []) or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        cfg.set(k.strip(), v, source="--set")
    if getattr(args, "out", None):
        cfg.out = args.out
    return cfg


def _print_result(run_dir: Path, result: RunResult) -> None:
    t, v = result.test, result.valid
    print(f"run: {run_dir}")
    print(f"valid AUC {v['auc']:.4f} logloss {v['logloss']:.4f}")
    if t:
        print(f"test AUC {t['auc']:.4f} logloss {t['logloss']:.4f}")
    print(
        f"best epoch {result.best_epoch} of {result.epochs}, {result.train_seconds:.1f}s training, "
        f"{result.train_rows_per_second:,.0f} rows/s"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from autoloss.train import distributed, failures
    from autoloss.train.run import saved_config
    from autoloss.train.search import train_any

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR")
    # A resumed run starts from its own config.yaml; options given now must not contradict it.
    cfg = config_from_args(args, saved_config(args.out) if args.resume else None)
    nproc = _nproc(args)
    if nproc > 1:
        return _launch(args, cfg, nproc)
    # Under torchrun (WORLD_SIZE > 1) this process is one rank of the run (docs/distributed.md);
    # its errors are one line, printed once (by the --nproc launcher).
    with failures.one_line_failures(), distributed.process_group(cfg.train.device) as ctx:
        if ctx is not None:
            distributed.check_config(cfg)
        # the run's progress and warnings through logging: --quiet / --verbose (autoloss.logs)
        run_dir, result = train_any(cfg, resume=args.resume, overwrite=args.overwrite)
    if ctx is None or ctx.is_main:
        _print_result(run_dir, result)
    return 0


def _nproc(args: argparse.Namespace) -> int:
    """The processes ``--nproc`` asks this command to start (1: train here)."""
    import os

    from autoloss.train import distributed

    n = getattr(args, "nproc", None)
    if n is None:
        return 1
    if n < 1:
        raise ConfigError(f"--nproc must be >= 1, got {n}")
    if distributed.launched():  # a rank torchrun started: it trains, whatever --nproc says
        world = int(os.environ["WORLD_SIZE"])
        if n != world:
            raise ConfigError(f"--nproc {n}: torchrun started {world} processes")
        return 1
    return n


def _launch(args: argparse.Namespace, cfg: RunConfig, nproc: int) -> int:
    """``--nproc N``: check here what can be checked (one line, exit 2), then run this command
    as N ranks through ``torch.distributed.run`` on this machine."""
    import os

    from autoloss.data.store import open_dataset
    from autoloss.locks import INHERITED_ENV, hold_run
    from autoloss.train import distributed, launch
    from autoloss.train.run import check_resumable, check_run_dir, run_dir_of

    cfg.validate()
    distributed.check_config(cfg)
    open_dataset(cfg.data.path, task=cfg.data.task)  # a wrong --data: one line, here
    distributed.rank_device(cfg.train.device, nproc - 1)  # one GPU per process
    rd = run_dir_of(cfg)  # chosen once: a default name holds the time
    # This process holds the run's lock for its ranks: rank 0 writes under it (INHERITED_ENV).
    with hold_run(rd.path) as lock:
        check_run_dir(rd, resume=args.resume, overwrite=args.overwrite)
        if args.resume:
            check_resumable(rd, cfg)
        os.environ[INHERITED_ENV] = lock.token
        try:
            return launch.launch_local(nproc, [*rank_argv(args), "--out", str(rd.path)])
        finally:
            os.environ.pop(INHERITED_ENV, None)


def rank_argv(args: argparse.Namespace) -> list[str]:
    """The ``autoloss train`` command line of each rank: the options given, without --nproc."""
    argv = ["train"]
    if args.config:
        argv += ["--config", args.config]
    for flag, (key, _kind, _metavar, _text) in TRAINING_FLAGS.items():
        value = getattr(args, key.replace(".", "__"), None)
        if value is not None:
            argv += [flag, str(value)]
    if args.loss__hard:
        argv.append("--hard")
    for item in args.overrides:
        argv += ["--set", item]
    if args.resume:
        argv.append("--resume")
    if args.overwrite:
        argv.append("--overwrite")
    for flag in ("quiet", "verbose"):  # the command line's logging (autoloss.cli)
        if getattr(args, flag, False):
            argv.append(f"--{flag}")
    return argv


def cmd_evaluate(args: argparse.Namespace) -> int:
    from autoloss.data.batches import BatchIterator
    from autoloss.data.store import EncodedDataset
    from autoloss.metrics import evaluate
    from autoloss.train.builder import resolve_device
    from autoloss.train.evaluation import predict_logits
    from autoloss.train.run import load_run

    run = load_run(args.run, device=args.device)
    path = args.data or run.cfg.data.path
    if path is None:
        raise ConfigError("--data is needed: the run's config names no dataset")
    data = EncodedDataset(path)
    if data.spec != run.spec:
        raise ConfigError(f"--data {data.path}: features differ from the run's training data")
    it = BatchIterator(data.split(args.split), run.cfg.data.eval_batch_size, shuffle=False)
    logits, y = predict_logits(run.model, iter(it.epoch(0)), resolve_device(args.device))
    m = evaluate(y, logits, run.spec.task)
    out = {"split": args.split, "rows": len(y), **m}
    print(json.dumps(out) if args.json else metrics_table(out, run.spec.task))
    return 0


def metrics_table(out: dict[str, Any], task: str = "binary") -> str:
    """``evaluate``'s result as a small aligned table (metrics with 4 decimals)."""

    def num(v: Any) -> str:
        return "n/a" if v is None or v != v else f"{float(v):.4f}"

    auc = "AUC (macro one-vs-rest)" if task == "multiclass" else "AUC"
    header = ["split", "rows", auc, "logloss"]
    cells = [
        str(out["split"]),
        f"{int(out['rows']):,}",
        num(out.get("auc")),
        num(out.get("logloss")),
    ]
    widths = [max(len(h), len(c)) for h, c in zip(header, cells)]

    def line(row: list[str]) -> str:  # the split left-aligned, numbers right-aligned
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    return line(header) + "\n" + line(cells)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model with a loss method",
        description="Train one model with one loss method on an encoded dataset (without --data: "
        "the embedded MovieLens data) into a run directory (config.yaml, metrics.jsonl, model.pt, "
        "result.json). Every setting has a config key: --set KEY=VALUE.",
    )
    add_training_options(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train one run as N processes on this machine (torch.distributed; gloo on CPU, "
        "nccl on GPUs; the global batch is --batch-size): docs/distributed.md",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="recompute the metrics of a trained run on a split",
        description="Score one split of the run's dataset (or of --data, with the same features) "
        "with the trained model and print rows, AUC and logloss as a table (--json: one JSON "
        "object, full precision).",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--data", metavar="PATH", help="encoded dataset (default: the run's)")
    p.add_argument(
        "--split", default="test", choices=["train", "valid", "test"], help="(default test)"
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="score raw rows with a trained run",
        description="Encode raw rows (in the format the run's dataset was prepared from) with the "
        "run's vocabularies and write the model's predictions to a CSV file.",
    )
    p.add_argument("--run", required=True)
    p.add_argument(
        "--input", required=True, help="raw rows in the format the dataset was prepared from"
    )
    p.add_argument("--out", required=True, help="output CSV (prob, or pred,p0..pC-1)")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser(
        "export",
        help="export a trained model for serving",
        description="Export the trained model of a run as ONNX or TorchScript: encoded inputs "
        "(x, and dense and bags where the data has them) in, probabilities out.",
    )
    p.add_argument("--run", required=True)
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)


def cmd_predict(args: argparse.Namespace) -> int:
    from autoloss.train.serving import predict_file

    n = predict_file(args.run, args.input, args.out)
    print(f"wrote {n} predictions to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from autoloss.train.serving import export_run

    out = export_run(args.run, args.format, args.out)
    print(f"exported {args.format} model to {out}")
    return 0
