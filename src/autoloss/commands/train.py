"""``autoloss train``, ``evaluate``, ``predict`` and ``export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig

# flag -> (dotted config key, type, help). Every other setting: --set key=value.
TRAINING_FLAGS: dict[str, tuple[str, type, str]] = {
    "--data": ("data.path", str, "encoded dataset directory (default: embedded MovieLens)"),
    "--task": ("data.task", str, "task of the embedded default: binary | multiclass"),
    "--model": (
        "model.name",
        str,
        "model name (lr, fm, deepfm, ipnn, nfm, autoint, widedeep, dcn, dcnv2, xdeepfm)",
    ),
    "--loss": (
        "loss.method",
        str,
        "loss method: ce, focal, kl, hinge, mse, uniform, weights:a,b,..., search, darts, slf, autoloss-soft, autoloss",
    ),
    "--candidates": ("loss.candidates", str, "candidate losses, e.g. focal,kl,hinge,ce"),
    "--epochs": ("train.epochs", int, "maximum epochs"),
    "--patience": ("train.patience", int, "early-stopping patience (validation AUC)"),
    "--batch-size": ("optim.batch_size", int, "training batch size"),
    "--lr": ("optim.lr", float, "learning rate of the recommender"),
    "--embed-dim": ("model.embed_dim", int, "embedding size"),
    "--mlp": ("model.mlp", str, "hidden layer sizes, e.g. 128,128"),
    "--dropout": ("model.dropout", float, "dropout of MLP layers"),
    "--seed": ("train.seed", int, "random seed"),
    "--device": ("train.device", str, "auto | cpu | cuda | cuda:N"),
    "--threads": ("train.num_threads", int, "CPU threads (0 = torch default)"),
    "--controller": ("loss.controller", str, "a saved controller.pt to transfer (frozen)"),
    "--update-every": ("loss.update_every", int, "controller update frequency f"),
    "--mode": ("loss.mode", str, "hypergradient: first-order | unrolled"),
    "--xi": ("loss.xi", float, "virtual step size of the unrolled hypergradient"),
    "--search-trials": ("loss.search_trials", int, "trials of --loss search"),
    "--eval-every": ("train.eval_every_steps", int, "validate every N steps (0 = every epoch)"),
    "--max-steps": ("train.max_steps", int, "stop after N steps (0 = no limit)"),
    "--progress": ("train.progress", str, "progress bar: auto | on | off"),
}


def add_training_options(p: argparse.ArgumentParser, *, with_out: bool = True) -> None:
    g = p.add_argument_group("training options")
    g.add_argument("--config", help="YAML config file (a run's config.yaml repeats that run)")
    for flag, (key, kind, text) in TRAINING_FLAGS.items():
        g.add_argument(flag, dest=key.replace(".", "__"), type=kind, default=None, help=text)
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
        help="any config setting, e.g. --set model.embed_dim=32 (repeatable)",
    )
    if with_out:
        g.add_argument("--out", help="run directory (default runs/<model>-<loss>-s<seed>-<time>)")


def config_from_args(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """The run's configuration: ``--config`` (or ``base``, or the defaults), then the flags and
    ``--set`` overrides the user gave, in that order."""
    if getattr(args, "config", None):
        cfg = RunConfig.from_yaml(args.config)
    else:
        cfg = base.copy() if base is not None else RunConfig()
    for flag, (key, _kind, _t) in TRAINING_FLAGS.items():
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


def _print_result(run_dir: Path, result: dict[str, Any]) -> None:
    t, v = result.get("test") or {}, result["valid"]
    print(f"run: {run_dir}")
    print(f"valid AUC {v['auc']:.4f} logloss {v['logloss']:.4f}")
    if t:
        print(f"test AUC {t['auc']:.4f} logloss {t['logloss']:.4f}")
    print(
        f"best epoch {result['best_epoch']} of {result['epochs']}, {result['train_seconds']:.1f}s training, "
        f"{result['train_rows_per_second']:,.0f} rows/s"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from autoloss.experiments.search import METHOD, train_searched
    from autoloss.train.run import saved_config, train_run

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out RUN_DIR")
    # A resumed run starts from its own config.yaml; options given now must not contradict it.
    cfg = config_from_args(args, saved_config(args.out) if args.resume else None)
    train = train_searched if cfg.loss.method == METHOD else train_run
    run_dir, result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    _print_result(run_dir, result)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from autoloss.data.batches import BatchIterator
    from autoloss.data.store import EncodedDataset
    from autoloss.metrics import evaluate
    from autoloss.train.run import load_run
    from autoloss.train.trainer import predict_logits, resolve_device

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
    print(json.dumps(out))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="train a model with a loss method", description="Train a model."
    )
    add_training_options(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="recompute metrics of a trained run")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--data", help="encoded dataset (default: the run's)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score raw rows with a trained run")
    p.add_argument("--run", required=True)
    p.add_argument(
        "--input", required=True, help="raw rows in the format the dataset was prepared from"
    )
    p.add_argument("--out", required=True, help="output CSV (prob, or pred,p0..pC-1)")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("export", help="export a trained model for serving")
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
