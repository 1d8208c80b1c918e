"""What AutoLoss adds to a CE step, part by part, and the least time it can take against CE.

Usage: python benchmarks/autoloss_overhead.py [--rows 1000000] [--data PREPARED_DIR]
                                              [--threads 1] [--rounds 7] [--steps 35]
                                              [--set loss.controller_hidden=32,32 ...]

DeepFM (paper configuration), batch 2000, on the synthetic Criteo-format data of
``train_throughput.py`` or a prepared dataset (``--data``). In one process, interleaved over
``--rounds`` rounds on the same ``--steps`` batches, it times a whole training step with
``--loss ce`` and with ``--loss autoloss`` (first-order, the controller's update every f = 7
steps included), and the parts of AutoLoss's extra work:

* controller: the controller's forward over the batch (``[y, ŷ]`` -> α, no gradient);
* gumbel: drawing the Gumbel-softmax weights from α;
* candidates: the K candidate losses forward and backward, minus CE's own;
* update / f: the controller's validation update (a recommender forward on a validation batch in
  evaluation mode, then the controller's own forward, backward and Adam step), per step;
  of which ``valid forward`` (the recommender's forward on the validation batch) and
  ``controller step`` (the controller's forward and backward in its learning mode).

The floor is CE's step plus the per-step parts: the time AutoLoss cannot go below whatever the
recommender's step costs, printed as a ratio to CE next to the measured ratio (medians over
rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import bench_data, bench_parser, deepfm_trainer
from _machine import machine_info
from _table import markdown
from autoloss.data.store import EncodedDataset
from autoloss.losses import evaluation_loss
from autoloss.policies.base import call_model
from autoloss.policies.bilevel import recommender_mode
from autoloss.train.trainer import Trainer


def trainer(data: EncodedDataset, method: str, settings: list[str]) -> Trainer:
    """The benchmark's trainer; ``settings``: ``KEY=VALUE`` strings, as ``--set`` takes them."""
    tr = deepfm_trainer(data, method, dict(item.partition("=")[::2] for item in settings))
    tr.model.train()
    return tr


def ms(fn: Callable[[Any], object], items: list[Any]) -> float:
    """Milliseconds per call of ``fn`` over ``items`` (after one warm-up call)."""
    fn(items[0])
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1000


def parts(ce: Trainer, al: Trainer, batches: list[Any]) -> dict[str, float]:
    """One round: every timing, on the same batches."""
    pol: Any = al.policy
    sel = pol.selector
    with torch.no_grad():
        logits = [(al.model(*b.inputs()), b.y) for b in batches]
    leaves = [(s.detach().requires_grad_(True), y) for s, y in logits]
    valid = [al._valid_stream().next() for _ in batches]

    def controller(item: tuple[torch.Tensor, torch.Tensor]) -> None:
        with torch.no_grad():
            sel.log_alpha(item[0], item[1], pol.num_steps, learn=False)

    def gumbel(item: tuple[torch.Tensor, torch.Tensor]) -> None:
        with torch.no_grad():
            sel.sample(sel.log_alpha(item[0], item[1], pol.num_steps, learn=False), pol.num_steps)

    def candidates(item: tuple[torch.Tensor, torch.Tensor]) -> None:
        pol.candidate_set(*item).mean(0).sum().backward()

    def ce_loss(item: tuple[torch.Tensor, torch.Tensor]) -> None:
        evaluation_loss(*item).backward()

    def valid_forward(vb: Any) -> None:
        with recommender_mode(al.model, False), torch.no_grad():
            call_model(al.model, vb.inputs())

    def controller_step(item: tuple[torch.Tensor, torch.Tensor]) -> None:
        sel.log_alpha(item[0], item[1], pol.num_steps, learn=True).sum().backward()

    out = {
        "ce step": ms(ce.train_step, batches),
        "autoloss step": ms(al.train_step, batches),
        "controller": ms(controller, logits),
        "gumbel": ms(gumbel, logits) - ms(controller, logits),
        "candidates": ms(candidates, leaves) - ms(ce_loss, leaves),
        "update": ms(lambda b: al._update_policy(b), batches[:8]),
        "valid forward": ms(valid_forward, valid[:8]),
        "controller step": ms(controller_step, leaves[:8]),
    }
    pol.zero_grad(set_to_none=True)
    return out


def parser() -> argparse.ArgumentParser:
    ap = bench_parser(__doc__, rows=1_000_000, threads=1, rounds=7, steps=35)
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a setting of the AutoLoss run, e.g. loss.controller_hidden=32,32 (repeatable)",
    )  # fmt: skip
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per part (medians over rounds), then the floor and the measured ratio to CE."""
    torch.set_num_threads(args.threads)
    data = bench_data(args)
    ce, al = trainer(data, "ce", []), trainer(data, "autoloss", args.set)
    it = ce._iterator("train", train=True)
    batches = [b for _, b in zip(range(args.steps), it.epoch(0), strict=False)]
    f = al.policy.update_every
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        rounds.append(parts(ce, al, batches))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in rounds[-1].items()))
    med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
    per_step = med["controller"] + med["gumbel"] + med["candidates"] + med["update"] / f
    floor = statistics.median(
        (x["ce step"] + x["controller"] + x["gumbel"] + x["candidates"] + x["update"] / f)
        / x["ce step"]
        for x in rounds
    )
    measured = statistics.median(x["autoloss step"] / x["ce step"] for x in rounds)
    print(f"medians of {args.rounds} rounds, ms ({len(batches)} batches of 2000, f = {f})")
    rows: list[dict[str, object]] = []
    for k in ("ce step", "autoloss step", "controller", "gumbel", "candidates"):
        rows.append({"part": k, "ms": med[k], "per step": med[k],
                     "share of a CE step": med[k] / med["ce step"]})  # fmt: skip
    for k in ("update", "valid forward", "controller step"):
        v = med[k] / f
        rows.append({"part": f"{k} (every {f} steps)", "ms": med[k], "per step": v,
                     "share of a CE step": v / med["ce step"]})  # fmt: skip
    rows.append({"part": "AutoLoss's added work per step", "per step": per_step})
    rows.append({"part": "floor, time vs CE (CE step + the parts)", "ratio": floor})
    rows.append({"part": "measured, time vs CE", "ratio": measured})
    return rows


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
