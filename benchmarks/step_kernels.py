"""The kernels of a sparse training step, each next to what it replaced, on a Criteo-scale batch.

Usage: python benchmarks/step_kernels.py [--threads 1] [--rounds 7]

A batch of 2000 rows x 39 fields drawn from a 1M-row table with a skewed id distribution (78k
occurrences of about 64k distinct rows, like the synthetic Criteo file), width 16. Each pair
runs interleaved over ``--rounds`` rounds; printed: the median milliseconds per call of each
side and their ratio. Pairs (shipped first):

* the ids grouped by row: stable sort on 32-bit keys vs 64-bit keys;
* each occurrence's position among the distinct ids: ``scatter_`` vs ``index_put_``;
* the gradient rows summed per distinct id (width 16): CSR product vs ``index_add_``;
  and for a width-1 table, where ``index_add_`` is kept;
* a dropout mask of 2000 x 128: SFC64 words vs torch's ``random_`` words (both four 16-bit
  uniforms per word) vs ``F.dropout``'s Bernoulli draws;
* the row-wise Adam's moments of the distinct rows: one gather/scatter of interleaved
  ``(rows, 2, 16)`` vs two of ``(rows, 16)``;
* the update added to the table: ``index_add_`` of pre-scaled rows vs a scaled ``index_add_``;
* Adam on DeepFM's dense layers: fused vs the default per-tensor implementation;
* AutoLoss's softmax and log-softmax over K = 4 candidates (2000 x 4), and a 5-class
  log-softmax (ratings): over dim 0 of the transposed view vs over the last dimension.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info
from _table import markdown
from autoloss import ops

Kernel = Callable[[], object]


def ms(fn: Kernel, calls: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1000


def pairs() -> dict[str, tuple[Kernel, ...]]:
    gen = torch.Generator().manual_seed(0)
    per_field = 25_600
    ids = (torch.rand(2000, 39, generator=gen) ** 3 * per_field).long()
    ids += torch.arange(39) * per_field
    flat, rows_total = ids.reshape(-1), 39 * per_field
    rows = ops.group_rows(ids, rows_total)
    uniq, n = rows.uniq, flat.numel()
    s, order = torch.sort(flat.to(torch.int32), stable=True)
    _, inv_sorted = torch.unique_consecutive(s, return_inverse=True)
    g16, g1 = torch.randn(n, 16), torch.randn(n, 1)
    x = torch.randn(2000, 128)
    table = torch.randn(rows_total, 16)
    mv = torch.zeros(rows_total, 2, 16)
    m_sep, v_sep = torch.zeros(rows_total, 16), torch.zeros(rows_total, 16)
    upd2, upd = torch.randn(uniq.numel(), 2, 16), torch.randn(uniq.numel(), 16)
    z4, z5 = torch.randn(2000, 4, generator=gen), torch.randn(2000, 5, generator=gen)

    def index_add(g: torch.Tensor) -> Kernel:
        return lambda: torch.zeros(uniq.numel(), g.shape[1]).index_add_(0, rows.inverse, g)

    def csr(g: torch.Tensor) -> Kernel:
        ones = torch.ones(n)
        shape = (uniq.numel(), n)
        return lambda: (
            torch.sparse_csr_tensor(rows.starts, rows.order, ones, shape, check_invariants=False)
            @ g
        )

    def torch_words() -> torch.Tensor:
        words = torch.empty(2000 * 128 // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = words.view(torch.int16).view(2000, 128) >= 13107 - 32768
        return x * keep.to(x.dtype).mul_(1.25)

    def adam(fused: bool) -> Kernel:
        shapes = [(128, 624), (128,), (128,), (128,), (128, 128), (128,), (128,), (128,)]
        params = [torch.nn.Parameter(torch.randn(sh)) for sh in (*shapes, (1, 128), (1,))]
        for p in params:
            p.grad = torch.randn_like(p)
        return torch.optim.Adam(params, lr=1e-3, fused=fused or None).step

    return {
        "sort the ids: 32-bit vs 64-bit keys": (
            lambda: torch.sort(flat.to(torch.int32), stable=True),
            lambda: torch.sort(flat, stable=True),
        ),
        "inverse: scatter_ vs index_put_": (
            lambda: torch.empty_like(inv_sorted).scatter_(0, order, inv_sorted),
            lambda: torch.empty_like(inv_sorted).index_put_((order,), inv_sorted),
        ),
        "sum rows, width 16: CSR vs index_add_": (
            lambda: ops.sum_rows(rows, g16),
            index_add(g16),
        ),
        "sum rows, width 1: index_add_ (kept) vs CSR": (
            lambda: ops.sum_rows(rows, g1),
            csr(g1),
        ),
        "dropout 2000x128: SFC64 words vs torch words vs F.dropout": (
            lambda: ops.dropout(x, 0.2),
            torch_words,
            lambda: F.dropout(x, 0.2),
        ),
        "moments gather: interleaved vs two tensors": (
            lambda: mv.index_select(0, uniq),
            lambda: (m_sep.index_select(0, uniq), v_sep.index_select(0, uniq)),
        ),
        "moments write: interleaved vs two tensors": (
            lambda: mv.index_copy_(0, uniq, upd2),
            lambda: (m_sep.index_copy_(0, uniq, upd), v_sep.index_copy_(0, uniq, upd)),
        ),
        "table update: index_add_ vs scaled index_add_": (
            lambda: table.index_add_(0, uniq, upd),
            lambda: table.index_add_(0, uniq, upd, alpha=-1e-3),
        ),
        "Adam, DeepFM dense layers: fused vs default": (adam(True), adam(False)),
        "softmax 2000x4: transposed vs last dim": (
            lambda: ops.row_softmax(z4),
            lambda: F.softmax(z4, -1),
        ),
        "log-softmax 2000x4: transposed vs last dim": (
            lambda: ops.row_log_softmax(z4),
            lambda: F.log_softmax(z4, -1),
        ),
        "log-softmax 2000x5 (ratings): transposed vs last dim": (
            lambda: ops.row_log_softmax(z5),
            lambda: F.log_softmax(z5, -1),
        ),
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20)
    return ap


def measure(args: argparse.Namespace) -> list[dict[str, object]]:
    """One row per pair: the median ms per call of each side and their ratios to the first."""
    torch.set_num_threads(args.threads)
    rows: list[dict[str, object]] = []
    for name, fns in pairs().items():
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.rounds):
            for t, fn in zip(times, fns, strict=True):
                t.append(ms(fn, args.calls))
        med = [statistics.median(t) for t in times]
        rows.append({
            "kernel (shipped first)": name,
            f"ms per call (median of {args.rounds} rounds)": " vs ".join(f"{m:.3f}" for m in med),
            "ratio": " / ".join(f"{m / med[0]:.2f}x" for m in med[1:]),
            "ms": med,
        })  # fmt: skip
    return rows


def main() -> None:
    args = parser().parse_args()
    print(machine_info())
    rows = measure(args)
    print(markdown([{k: v for k, v in r.items() if k != "ms"} for r in rows]))


if __name__ == "__main__":
    main()
