"""Options for a faster training step, measured against the current step in one process.

Usage: python benchmarks/step_options.py [--rows 1000000] [--threads 1] [--rounds 5] [--steps 40]
                                         [--data PREPARED_DIR] [--loss ce|autoloss|...]

DeepFM (paper configuration), ``--loss ce`` (or the method given), batch 2000, on the synthetic
Criteo-format data of ``train_throughput.py`` (``--rows`` rows, ``--min-count 1``) or a prepared
dataset (``--data``).
Each option is one trainer built from the same seed; the options take turns on the same
``--steps`` batches for ``--rounds`` rounds. Printed: the best round of each option, and the
median over rounds of its time relative to ``current`` in the same round (a shared machine's
bursts hit a round, not an option). Options:

* current: the step as shipped;
* index-add: a lookup's backward sums its gradient rows per id with ``index_add_`` (the step
  before the CSR product of ``ops.sum_rows``);
* torch-words: the dropout masks' 64-bit words come from torch's ``random_`` (before NumPy's
  SFC64 generator, seeded from torch's);
* int64-sort: the ids are sorted as 64-bit keys (before 32-bit keys for tables under 2**31 rows);
* unshared-unique: every table groups the batch's ids on its own (before the embedding and
  linear tables shared one sort; the switch ``ops.use_reference("shared_sort")``);
* torch-dropout: ``nn.Dropout``'s masks (one Bernoulli draw per element, before four 16-bit
  uniforms per 64-bit random word, ``ops.dropout``; the switch ``use_reference("dropout")``,
  which also covers the controller's dropout);
* fm-autograd: autograd's backward of the FM term (before its one-expression backward; the
  switch ``use_reference("pairwise")``);
* old-adam: the row-wise Adam as it was: each table's two moments in two tensors (before they
  were interleaved, one gather and one scatter per step) and the update added by a scaled
  ``index_add_`` (PyTorch's slow path; now the scale is applied first);
* lastdim-softmax: softmax and log-softmax over a narrow last dimension with PyTorch's own
  last-dimension kernel (before ``ops.row_softmax``'s transposed route; AutoLoss's
  controller and Gumbel weights, and multi-class losses; the switch ``use_reference("softmax")``);
* previous: index-add, torch-words, int64-sort, fm-autograd and old-adam together (the step
  shipped before those changes);
* before: every change above undone (index-add, unshared-unique, torch-dropout);
* compiled: ``torch.compile`` of the dense parts (the MLP tower and the FM term; the sparse
  lookup stays eager). Its compile seconds are printed; skipped where no compiler works.

Options that undo a kernel of ``autoloss.ops`` run under its switch (``ops.use_reference``);
index-add, torch-words, int64-sort and old-adam are earlier versions of our own code, not
PyTorch's ops, and are patched in here.
"""

from __future__ import annotations

import argparse
import contextlib
import math
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
from autoloss import ops
from autoloss.data.store import EncodedDataset
from autoloss.ops import dropout_mask, embedding
from autoloss.train import optim
from autoloss.train.trainer import Trainer

ACTIVE: set[str] = set()  # the option the next steps run under


#: option -> the changes it undoes
UNDOES = {
    "current": (),
    "index-add": ("index-add",),
    "torch-words": ("torch-words",),
    "unshared-unique": ("unshared-unique",),
    "torch-dropout": ("torch-dropout",),
    "int64-sort": ("int64-sort",),
    "fm-autograd": ("fm-autograd",),
    "old-adam": ("old-adam",),
    "lastdim-softmax": ("lastdim-softmax",),
    "previous": ("index-add", "torch-words", "int64-sort", "fm-autograd", "old-adam"),
    "before": (
        "index-add",
        "int64-sort",
        "fm-autograd",
        "old-adam",
        "unshared-unique",
        "torch-dropout",
    ),
}


#: option -> the kernels of ``autoloss.ops`` it switches back to PyTorch's own op
REFERENCE = {
    "unshared-unique": "shared_sort",
    "torch-dropout": "dropout",
    "fm-autograd": "pairwise",
    "lastdim-softmax": "softmax",
}


def patch() -> Callable[[], None]:
    """Route the dropout words, the sort keys, the row sums and the row-wise Adam through the
    earlier versions that the active option undoes (the rest goes through ``ops``'s switch);
    returns the function that puts the shipped versions back."""
    grouped, summed, keep_mask = embedding.group_rows, embedding.sum_rows, dropout_mask.keep_mask

    def torch_words(shape: torch.Size, cut: int, dtype: torch.dtype) -> torch.Tensor:
        if "torch-words" not in ACTIVE:
            return keep_mask(shape, cut, dtype)
        n = shape.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        uniform16 = words.view(torch.int16)[:n].view(shape)
        return (uniform16 >= cut - 32768).to(dtype).mul_(65536 / (65536 - cut))

    def group_rows(ids: torch.Tensor, num_rows: int | None = None) -> Any:
        return grouped(ids, None if "int64-sort" in ACTIVE else num_rows)

    def sum_rows(rows: Any, g: torch.Tensor) -> torch.Tensor:
        if "index-add" not in ACTIVE:
            return summed(rows, g)
        out = torch.zeros(rows.uniq.numel(), g.shape[1], dtype=g.dtype)
        return out.index_add_(0, rows.inverse, g)

    sparse_step = optim._sparse_step
    split: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def split_moments(p: torch.Tensor, grad: torch.Tensor, moments: torch.Tensor, group: dict,
                      t: float) -> None:  # fmt: skip
        if "old-adam" not in ACTIVE:
            return sparse_step(p, grad, moments, group, t)
        if id(p) not in split:
            split[id(p)] = (moments[:, 0].clone(), moments[:, 1].clone())
        m_all, v_all = split[id(p)]
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        idx, g = grad._indices()[0], grad._values()
        m = m_all.index_select(0, idx).lerp_(g, 1 - b1)
        v = v_all.index_select(0, idx).mul_(b2).addcmul_(g, g, value=1 - b2)
        m_all.index_copy_(0, idx, m)
        v_all.index_copy_(0, idx, v)
        denom = v.sqrt_().mul_(1 / math.sqrt(1 - b2**t)).add_(eps)
        p.index_add_(0, idx, m.div_(denom), alpha=-lr / (1 - b1**t))
        return None

    optim._sparse_step = split_moments
    dropout_mask.keep_mask = torch_words
    embedding.group_rows = group_rows
    embedding.sum_rows = sum_rows

    def restore() -> None:
        ACTIVE.clear()
        optim._sparse_step = sparse_step
        dropout_mask.keep_mask = keep_mask
        embedding.group_rows, embedding.sum_rows = grouped, summed

    return restore


def trainer(data: EncodedDataset, loss: str) -> Trainer:
    return deepfm_trainer(data, loss, {})


def compiled(data: EncodedDataset, loss: str, batches: list[Any]) -> Trainer | None:
    tr = trainer(data, loss)
    model: Any = tr.model
    t0 = time.perf_counter()
    try:
        model.mlp = torch.compile(model.mlp, dynamic=False)
        model.fm = torch.compile(model.fm, dynamic=False)
        for b in batches[:2]:
            tr.train_step(b)
    except Exception as exc:  # no C++ compiler, unsupported platform: report and go on
        print(f"compiled: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
        return None
    print(f"compiled: first two steps (compilation) {time.perf_counter() - t0:.1f} s")
    return tr


def ms_per_step(tr: Trainer, option: str, batches: list[Any]) -> float:
    ACTIVE.clear()
    ACTIVE.update(UNDOES.get(option, ()))
    kernels = [REFERENCE[u] for u in ACTIVE if u in REFERENCE]  # none named would mean all
    with ops.use_reference(*kernels) if kernels else contextlib.nullcontext():
        for b in batches[:3]:  # warm-up
            tr.train_step(b)
        t0 = time.perf_counter()
        for b in batches[3:]:
            tr.train_step(b)
        return (time.perf_counter() - t0) / (len(batches) - 3) * 1000


def parser() -> argparse.ArgumentParser:
    ap = bench_parser(__doc__, rows=1_000_000, threads=1, rounds=5, steps=40)
    ap.add_argument("--no-compile", action="store_true", help="leave the compiled option out")
    ap.add_argument("--loss", default="ce", help="the trainers' --loss method (default ce)")
    ap.add_argument("--options", default=",".join(UNDOES), help="the options timed (default all)")
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per option: its best ms per step, its median time relative to ``current``."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    data = bench_data(args)
    restore = patch()
    try:
        first = trainer(data, args.loss)
        it = first._iterator("train", train=True)
        batches = [b for _, b in zip(range(args.steps + 3), it.epoch(0), strict=False)]
        chosen = [o for o in args.options.split(",") if o in UNDOES and o != "current"]
        others = {o: trainer(data, args.loss) for o in chosen}
        trainers = {"current": first, **others}
        if not args.no_compile:
            tr = compiled(data, args.loss, batches)
            if tr is not None:
                trainers["compiled"] = tr
        times: dict[str, list[float]] = {o: [] for o in trainers}
        for r in range(args.rounds):
            for option, tr in trainers.items():
                times[option].append(ms_per_step(tr, option, batches))
            print(f"round {r + 1}: " + ", ".join(f"{o} {t[-1]:.1f}" for o, t in times.items()))
    finally:
        restore()
    base = times["current"]
    return [
        {
            "option": option,
            f"ms per step (best of {args.rounds})": min(t),
            "time vs current (median of rounds)": statistics.median(
                a / b for a, b in zip(t, base, strict=True)
            ),
        }
        for option, t in times.items()
    ]


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    print(markdown(measure(args)))


if __name__ == "__main__":
    main()
