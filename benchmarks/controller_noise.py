"""What AutoLoss's controller learns under label noise, against the fixed uniform mixture.

Trains DeepFM with ``--loss autoloss`` and ``--loss uniform`` (the same four candidates, the
same seed, the same flipped training labels, a clean validation split), then reads the finished
runs back and, on the training rows as the model saw them (noisy labels), reports per group of
examples — clean or flipped, by the label the model was given:

* the controller's α over the candidates (its output before Gumbel noise), and
* the mixture's pull on the example: the mean |∂L/∂s| of the α-weighted loss with respect to the
  logit s, for the learnt α and for the uniform weights, at the final model's predictions.

A controller that helps under noise should pull less on flipped examples than the uniform
mixture does (relative to clean ones); one that hurts pulls more.

    python benchmarks/controller_noise.py --data data/frappe_x1 --root bench-out/controller-noise \
        [--seed 2021] [--noise 0.3] [--mode symmetric] [--epochs 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from _machine import machine_info  # type: ignore[import-not-found]
from _runs import train_cached  # type: ignore[import-not-found]
from _table import markdown  # type: ignore[import-not-found]
from autoloss.data.batches import BatchIterator
from autoloss.data.store import open_dataset
from autoloss.losses.candidates import get_candidate
from autoloss.policies.gumbel import load_controller
from autoloss.train.run import load_run
from autoloss.train.trainer import predict_logits, run_dataset


def train_both(args: argparse.Namespace) -> dict[str, Path]:
    common = [
        "--data", str(args.data), "--model", "deepfm", "--epochs", str(args.epochs),
        "--seed", str(args.seed), "--threads", "1", "--set", f"data.label_noise={args.noise}",
        "--set", f"data.noise_mode={args.mode}", "--set", "data.noise_on_valid=false",
        *(a for kv in args.set for a in ("--set", kv)),
    ]  # fmt: skip
    runs = {}
    for method in ("autoloss", "uniform"):
        out = args.root / f"{method}-s{args.seed}"
        res = train_cached(out, [*common, "--loss", method])
        print(f"{method}: test AUC {res['test']['auc']:.4f}, best epoch {res.get('best_epoch')}")
        runs[method] = out
    return runs


def train_rows(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The final model's logits on the training rows, the labels it trained on (the run's own
    data conditions, rebuilt from its config: the same flips) and the clean labels."""
    loaded = load_run(run)
    noisy = run_dataset(loaded.cfg).split("train")
    clean_y = np.asarray(open_dataset(loaded.cfg.data.path).split("train").y)
    batches = BatchIterator(noisy, 20_000, shuffle=False).epoch(0)
    logits, y = predict_logits(loaded.model, batches, torch.device("cpu"))
    return logits.astype(np.float64), y.astype(np.int64), clean_y


def candidate_terms(
    candidates: list[str], logits: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's loss value ℓ_k and pull |∂ℓ_k/∂s| (both (N, K)) at the logits s."""
    s = torch.from_numpy(logits).requires_grad_(True)
    yt = torch.from_numpy(y)
    values, grads = [], []
    for name in candidates:
        loss = get_candidate(name).fn("binary")(s, yt)
        (g,) = torch.autograd.grad(loss.sum(), s)
        values.append(loss.detach().numpy())
        grads.append(g.abs().numpy())
    return np.stack(values, axis=1), np.stack(grads, axis=1)


def report(runs: dict[str, Path]) -> tuple[list[dict[str, object]], list[str]]:
    """The table's rows (one per group of training rows) and the summary lines under it."""
    ctrl = load_controller(runs["autoloss"] / "controller.pt")
    logits, y, clean = train_rows(runs["autoloss"])
    p = 1 / (1 + np.exp(-logits))
    alpha = ctrl.alpha(torch.from_numpy(y), torch.from_numpy(p).float()).double().numpy()
    values, g = candidate_terms(list(ctrl.candidates), logits, y)
    learnt = (alpha * g).sum(axis=1)
    uniform = g.mean(axis=1)
    rows: list[dict[str, object]] = []
    for flipped in (False, True):
        for label in (0, 1):
            m = ((y != clean) == flipped) & (y == label)
            lp, up = learnt[m].mean(), uniform[m].mean()
            rows.append({
                "group": f"{'flipped' if flipped else 'clean'}, given y={label}",
                "rows": f"{m.sum():,}", "mean ŷ": f"{p[m].mean():.3f}",
                **{f"α {c}": f"{v:.3f}" for c, v in zip(ctrl.candidates, alpha[m].mean(axis=0))},
                "pull (learnt α)": f"{lp:.4f}", "pull (uniform)": f"{up:.4f}",
                "ratio": f"{lp / up:.2f}",
            })  # fmt: skip
    flip = y != clean
    # The first-order controller minimises the α-weighted validation loss at fixed recommender
    # weights: its optimum puts all mass on the candidate whose loss *value* is smallest.
    same = alpha.argmax(axis=1) == values.argmin(axis=1)
    notes = [
        f"flipped/clean mean pull: learnt α {learnt[flip].mean() / learnt[~flip].mean():.2f}, "
        f"uniform {uniform[flip].mean() / uniform[~flip].mean():.2f}; rows whose largest α "
        f"exceeds 0.9: {(alpha.max(axis=1) > 0.9).mean():.1%}",
        f"rows whose largest α is on the candidate with the smallest loss value: {same.mean():.1%}",
    ]
    return rows, notes


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="a prepared binary dataset")
    ap.add_argument("--root", type=Path, default=Path("bench-out/controller-noise"))
    ap.add_argument("--seed", type=int, default=2021)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--mode", default="symmetric")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of both runs (repeatable)")  # fmt: skip
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """The table's rows; the summary lines are printed."""
    rows, notes = report(train_both(args))
    print("\n".join(notes))
    return rows


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    rows, notes = report(train_both(args))
    print(f"\n{markdown(rows)}")
    print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
