"""Training throughput of DeepFM (paper config) next to a plain hand-written PyTorch loop.

Usage: python benchmarks/train_throughput.py [--rows 400000] [--steps 150] [--device cpu]
                                            [--data PREPARED_DIR]

Prepares a synthetic Criteo-format file whose vocabulary has about 1M rows (min-count 1), or takes
a prepared dataset of categorical fields (``--data``, e.g. Frappe_x1), then in one process, on the
same encoded arrays, times
  * plain: a hand-written DeepFM (one sparse nn.Embedding + offsets, FM, MLP 128-128 with BatchNorm,
    ReLU, dropout 0.2), torch.optim.SparseAdam for the table and Adam for the rest, batch 2000;
  * autoloss with --loss ce, uniform, autoloss (first-order) and autoloss unrolled, and on
    request (``--methods``) ``autoloss-c32f14``: AutoLoss with a 32-32 controller updated every 14
    steps (the cheaper controller of docs/method.md, "The controller's cost on a CPU"),
    ``reweight`` (per-example weights, meta-gradient every 7 steps) and ``reweight-f1`` (every step),
all in a process under one C heap policy (``--heap``: ``keep``, the trainer's default
``train.heap``, or glibc's ``system``; the plain loop runs under it too), and prints rows/s, time
relative to CE (of the best rounds, and the median over rounds of the ratio within each round: a
burst of load on a shared machine hits a round, not a method), and peak RSS. Figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import bench_data, bench_parser, deepfm_trainer
from _machine import machine_info
from _table import markdown
from autoloss.data.batches import BatchIterator
from autoloss.data.store import EncodedDataset
from autoloss.train import heap


class PlainDeepFM(nn.Module):
    """The reference: what a competent user writes by hand (logits out, BCE-with-logits outside)."""

    def __init__(
        self, vocab: list[int], dim: int = 16, hidden: tuple[int, ...] = (128, 128)
    ) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor(np.concatenate([[0], np.cumsum(vocab)[:-1]])))
        total = int(sum(vocab))
        self.emb = nn.Embedding(total, dim, sparse=True)
        self.lin = nn.Embedding(total, 1, sparse=True)
        nn.init.normal_(self.emb.weight, std=1e-4)
        nn.init.zeros_(self.lin.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        layers: list[nn.Module] = []
        d = len(vocab) * dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(0.2)]
            d = h
        layers.append(nn.Linear(d, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x + self.offsets
        e = self.emb(ids)
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        return self.lin(ids).sum((1, 2)) + self.bias + fm + self.mlp(e.flatten(1)).squeeze(1)


def plain_loop(data: EncodedDataset, steps: int, batch: int, seed: int) -> float:
    torch.manual_seed(seed)
    split = data.split("train")
    model = PlainDeepFM(list(data.spec.cat_vocab))
    sparse = [model.emb.weight, model.lin.weight]
    dense = [p for n, p in model.named_parameters() if not n.startswith(("emb.", "lin."))]
    opt_s = torch.optim.SparseAdam(sparse, lr=1e-3)
    opt_d = torch.optim.Adam(dense, lr=1e-3)
    lossf = nn.BCEWithLogitsLoss()
    it = BatchIterator(split, batch, shuffle=True, seed=seed)
    done, rows, t0 = 0, 0, 0.0
    epoch = 0
    while done < steps:
        for b in it.epoch(epoch):
            if done == 5:  # warm-up excluded
                t0, rows = time.perf_counter(), 0
            loss = lossf(model(b.x), b.y.float())
            opt_s.zero_grad()
            opt_d.zero_grad()
            loss.backward()
            opt_s.step()
            opt_d.step()
            done += 1
            rows += len(b)
            if done >= steps:
                break
        epoch += 1
    return rows / (time.perf_counter() - t0)


def ours(data: EncodedDataset, method: str, args: argparse.Namespace, seed: int,
         **loss_kw: object) -> float:  # fmt: skip
    """rows/s of our trainer with ``--loss method`` (and ``loss.*`` settings ``loss_kw``)."""
    settings: dict[str, object] = {f"loss.{k}": v for k, v in loss_kw.items()}
    settings.update({
        "optim.batch_size": args.batch_size, "train.seed": seed, "train.device": args.device,
        "train.heap": args.heap, "train.max_steps": args.steps, "train.epochs": 1000,
        "train.patience": 10**9,
    })  # fmt: skip
    trainer = deepfm_trainer(data, method, settings)
    # Time the training loop only (the evaluation that max_steps triggers is excluded by the trainer).
    trainer.fit()
    return trainer.rows_seen / trainer.train_seconds


#: --methods names that are a method with other settings: name -> (method, loss settings)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "unrolled": ("autoloss", {"mode": "unrolled"}),
    "autoloss-c32f14": ("autoloss", {"controller_hidden": "32,32", "update_every": 14}),
    "reweight-f1": ("reweight", {"reweight_update_every": 1}),
}


def parser() -> argparse.ArgumentParser:
    ap = bench_parser(__doc__, rows=400_000, threads=0, rounds=3, steps=60)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default="plain,ce,uniform,autoloss,unrolled")
    ap.add_argument("--heap", choices=("keep", "system"), default="keep",
                    help="the C heap policy of the whole process (train.heap; default keep)")  # fmt: skip
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per method: best rows/s over the rounds, time per row relative to CE."""
    if args.heap == "keep":
        heap.keep_freed_memory()
    if args.threads > 0:  # on a shared machine one thread per process avoids OpenMP spin-waits
        torch.set_num_threads(args.threads)
    data = bench_data(args)
    vocab = sum(data.spec.cat_vocab)
    print(
        f"data: {len(data.split('train')):,} train rows, {len(data.spec.cat_vocab)} fields, "
        f"{vocab:,} embedding rows; batch {args.batch_size}, {args.steps} steps per method"
    )
    # Methods are interleaved over several rounds and the best round is kept: on a shared machine a
    # burst of load hits one round, not one method.
    results: dict[str, list[float]] = {m: [] for m in args.methods.split(",")}
    for r in range(args.rounds):
        for m in results:
            if m == "plain":
                rps = plain_loop(data, args.steps, args.batch_size, r)
            elif m in VARIANTS:
                rps = ours(data, VARIANTS[m][0], args, r, **VARIANTS[m][1])
            else:
                rps = ours(data, m, args, r)
            results[m].append(rps)
            print(f"round {r + 1} {m:>10}: {rps:10,.0f} rows/s", flush=True)
    best = {m: max(v) for m, v in results.items()}
    rows: list[dict[str, object]] = []
    for m, rps in best.items():
        row: dict[str, object] = {"method": m, "rows/s (best)": rps}
        if "ce" in results:  # the median over rounds of the ratio within each round
            row["time/row vs ce (best)"] = best["ce"] / rps
            row["time/row vs ce (median of rounds)"] = statistics.median(
                c / r for c, r in zip(results["ce"], results[m])
            )
        rows.append(row)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:,.0f} MiB")
    return rows


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    rows = measure(args)
    print(f"\nbest of {args.rounds} rounds ({args.steps} steps each, batch {args.batch_size}):")
    print(markdown(rows))


if __name__ == "__main__":
    main()
