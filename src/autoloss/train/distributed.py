"""One training run across processes (``torchrun``, ``autoloss train --nproc N``).

Every rank holds a full replica of the model, the loss policy and their optimisers. The global
batch is ``optim.batch_size``: each rank reads it and keeps its own contiguous part
(:class:`ShardedBatches`), so the same configuration means the same optimisation at any world
size. After the backward pass the gradients are averaged explicitly, weighted by the rows of each
part (:class:`Replicas`): the dense ones with one ``all_reduce``, the sparse embedding tables by an
``all_gather`` of the rows each rank touched and their gradients, summed into the same coalesced
sparse gradient on every rank (NCCL has no sparse all-reduce). Every rank then applies the same
update. The recommender is not wrapped in ``DistributedDataParallel``: its reducer cannot hold
sparse tables with NCCL, and the bi-level policies take ``autograd.grad`` and several backward
passes per step, which bypass or confuse its hooks (docs/distributed.md).

The process group is the one ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``): gloo on CPU, nccl on CUDA (``cuda:LOCAL_RANK``). A world of one
process takes none of these paths: single-process training is unchanged bit for bit.
"""

from __future__ import annotations

import faulthandler
import gc
import io
import logging
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from autoloss.data.batches import BatchIterator
from autoloss.data.spec import Batch
from autoloss.errors import AutolossError, ConfigError
from autoloss.locks import _proc_stat
from autoloss.train.config import RunConfig
from autoloss.train.optim import split_parameters

#: Seconds a collective (and the process group's start) may wait for the other ranks.
TIMEOUT_ENV = "AUTOLOSS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
#: Set by the ``--nproc`` launcher (:func:`launch_local`) for its ranks: a directory where each
#: rank leaves its pid (``rank-R.pid``) and, when it fails, its one-line error (``rank-R.error``),
#: which the launcher prints once instead of every rank printing its own.
REPORT_ENV = "AUTOLOSS_RANK_REPORTS"


class DistributedError(AutolossError):
    """A distributed run stopped because a rank stopped answering or went away (one line)."""


class Batches(Protocol):
    """What the trainer iterates: batches of one epoch from a position, and how many."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]: ...


# ---------------------------------------------------------------------------------------------
# The process group


@dataclass(frozen=True)
class Context:
    """This process's place in a distributed run; ``device``: where collectives run."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected seconds") from None
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected seconds > 0")
    return value


def context() -> Context | None:
    """The distributed run this process belongs to, or None (one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    nccl = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
    world = dist.get_world_size()
    return Context(
        rank=dist.get_rank(),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        device=device,
    )


def rank_device(name: str, local_rank: int) -> torch.device:
    """The training device of a rank: CPU, or ``cuda:LOCAL_RANK`` for ``cuda`` / ``auto``."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        raise ConfigError(
            f"--device {name}: with several processes each uses cuda:LOCAL_RANK; "
            "give --device cuda (or auto, or cpu)"
        )
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
            "start at most one process per GPU"
        )
    return torch.device("cuda", local_rank)


def init_from_env(device_name: str) -> Context | None:
    """Join the process group torchrun describes; None when this is the only process."""
    if not launched():
        return None
    faulthandler.enable()  # a rank that aborts or crashes prints its Python stacks
    if not dist.is_initialized():
        device = rank_device(device_name, int(os.environ.get("LOCAL_RANK", "0")))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        _announce()
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    return context()


# ---------------------------------------------------------------------------------------------
# Failures: one line, printed once


def _reports() -> str:
    return os.environ.get(REPORT_ENV, "")


def _announce() -> None:
    """Leave this rank's pid where the launcher and the other ranks find it."""
    if _reports():
        with suppress(OSError, KeyError, ValueError):
            rank = int(os.environ["RANK"])
            Path(_reports(), f"rank-{rank}.pid").write_text(str(os.getpid()))


def _peer_states() -> dict[int, tuple[int, str]]:
    """(pid, state) of every other rank that announced itself: "stopped", "gone" or "running"."""
    out: dict[int, tuple[int, str]] = {}
    me = int(os.environ.get("RANK", "-1"))
    files = Path(_reports()).glob("rank-*.pid") if _reports() else iter(())
    for f in files:
        with suppress(OSError, ValueError):
            rank, pid = int(f.stem.removeprefix("rank-")), int(f.read_text())
            if rank == me:
                continue
            stat = _proc_stat(pid)
            state = "gone" if stat is None or stat[0] in "ZX" else "running"
            out[rank] = (pid, "stopped" if stat is not None and stat[0] in "Tt" else state)
    return dict(sorted(out.items()))


def collective_failure(exc: BaseException) -> DistributedError | None:
    """A collective (or the process group's start) that failed because another rank stopped
    answering or went away, as one line naming that rank where it can be told; None for any
    other error."""
    if not isinstance(exc, RuntimeError):  # DistBackendError, DistNetworkError, gloo's errors
        return None
    text = str(exc)
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    lost = any(
        s in text
        for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                  "Connection refused", "Socket closed")
    )  # fmt: skip
    if not (timed_out or lost):
        return None
    me = os.environ.get("RANK", "?")
    peers = _peer_states()
    stopped = [f"rank {r} (pid {pid})" for r, (pid, st) in peers.items() if st == "stopped"]
    gone = [f"rank {r} (pid {pid})" for r, (pid, st) in peers.items() if st == "gone"]
    if stopped:
        who = f"{', '.join(stopped)} stopped answering: the process is stopped (SIGSTOP or Ctrl-Z)"
    elif gone:
        who = f"{', '.join(gone)} stopped answering: the process is gone"
    else:
        who = "another rank stopped answering" if timed_out else "another rank went away"
    waited = f" after {timeout_seconds():g}s ({TIMEOUT_ENV})" if timed_out else ""
    return DistributedError(
        f"{who}; rank {me} gave up waiting for it{waited}; the run keeps its last checkpoint: "
        "rerun the command with --resume"
    )


@contextmanager
def one_line_failures() -> Iterator[None]:
    """Around a rank's command: a failed collective becomes one line (:class:`DistributedError`)
    instead of gloo's traceback; under the ``--nproc`` launcher a rank's one-line error is left
    for the launcher to print once (the rank exits 2) instead of printed by every rank."""
    try:
        yield
    except Exception as exc:
        error = collective_failure(exc) or exc
        if not isinstance(error, AutolossError):
            raise
        if _reports() and launched():
            with suppress(OSError, KeyError, ValueError):
                rank = int(os.environ["RANK"])
                code = 1 if isinstance(error, DistributedError) else 2
                tmp = Path(_reports(), f".rank-{rank}.tmp")
                tmp.write_text(f"{code}\t{error}")
                tmp.rename(Path(_reports(), f"rank-{rank}.error"))
                raise SystemExit(code) from None
        if error is exc:
            raise
        raise error from None


@contextmanager
def process_group(device_name: str) -> Iterator[Context | None]:
    """:func:`init_from_env` for the duration of a command, then leave the group."""
    ctx = init_from_env(device_name)
    try:
        yield ctx
        if ctx is not None:  # every rank done before any tears its transport down
            dist.barrier()
    finally:
        if ctx is not None and dist.is_initialized():
            dist.destroy_process_group()
            gc.collect()  # free what held the group's buffers while the interpreter is whole


def check_config(cfg: RunConfig) -> None:
    """Refuse what a distributed run does not support (one line, exit 2)."""
    if cfg.loss.method == "search":
        raise ConfigError(
            "--loss search runs its trials in one process: train it without --nproc/torchrun, "
            "then train the weights it finds (weights:...) on several"
        )
    if cfg.loss.method == "reweight":
        raise ConfigError(
            "--loss reweight normalises its weights over each whole batch, which a distributed "
            "run splits between processes: train it in one process"
        )
    if "history" in cfg.loss.controller_inputs:
        raise ConfigError(
            "loss.controller_inputs 'history' keeps a per-example memory that a distributed "
            "run does not share between processes: train it in one process"
        )


def threads_per_rank(local_world_size: int) -> int:
    """CPU threads for each of ``local_world_size`` processes on this machine."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(1, local_world_size))


def launch_local(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m autoloss ARGV`` as ``nproc`` processes through ``torch.distributed.run``
    (a standalone rendezvous on this machine); returns 0, or raises the ranks' failure as one
    error (:func:`_report_failure`): a user error of the ranks, or which rank stopped answering
    (a stopped rank is killed at once rather than waited for)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_rank(nproc)))
    join = f"join_timeout={int(timeout_seconds())}"
    args = parse_args(
        ["--standalone", "--nproc-per-node", str(nproc), "--max-restarts", "0",
         "--rdzv-conf", join, "-m", "autoloss", *argv]
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="autoloss-ranks-") as reports:
        os.environ[REPORT_ENV] = reports
        done = threading.Event()
        watch = threading.Thread(target=_stop_stopped_ranks, args=(reports, done), daemon=True)
        watch.start()
        logging.disable(logging.ERROR)  # the agent's "failed (exitcode ...)": said in one line
        try:
            run(args)
        except ChildFailedError as exc:
            return _report_failure(reports, exc)
        finally:
            logging.disable(logging.NOTSET)
            done.set()
            watch.join()
            os.environ.pop(REPORT_ENV, None)
    return 0


def _stop_stopped_ranks(reports: str, done: threading.Event) -> None:
    """Once a rank has failed, kill the ranks that are stopped (SIGSTOP): the agent's SIGTERM
    would wait for them for 30 s. The others are stopped by the agent."""
    while not done.wait(0.2):
        if not any(Path(reports).glob("rank-*.error")):
            continue
        for f in Path(reports).glob("rank-*.pid"):
            with suppress(OSError, ValueError):
                pid = int(f.read_text())
                stat = _proc_stat(pid)
                if stat is not None and stat[0] in "Tt":
                    os.kill(pid, signal.SIGKILL)


def _report_failure(reports: str, exc: Any) -> NoReturn:
    """The ranks' failure as one error (printed once, by the command line): a rank's user error
    (ConfigError, exit 2) before a failed collective, else the lowest rank's; a rank that
    crashed without a one-line error is named with its exit code or signal."""
    errors: list[tuple[bool, int, str]] = []
    for f in Path(reports).glob("rank-*.error"):
        with suppress(OSError, ValueError):
            text, _, message = f.read_text().partition("\t")
            errors.append((int(text) != 2, int(f.stem.removeprefix("rank-")), message))
    if errors:  # a user error first (another rank's failure follows from it), then rank order
        collective, _, message = min(errors)
        raise (DistributedError(message) if collective else ConfigError(message))
    parts = []
    for rank, failure in sorted(exc.failures.items()):
        status = int(failure.exitcode)
        how = f"exited with {status}"
        if status < 0:
            with suppress(ValueError):
                how = f"was killed by {signal.Signals(-status).name}"
        parts.append(f"rank {rank} (pid {failure.pid}) {how}")
    raise DistributedError(
        f"{'; '.join(parts)} (its output is above); the run keeps its last checkpoint: "
        "rerun the command with --resume"
    )


# ---------------------------------------------------------------------------------------------
# Sharding


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` that ``rank`` takes: contiguous, disjoint, covering, sizes
    differing by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


def batch_part(batch: Batch, lo: int, hi: int) -> Batch:
    """Rows ``[lo, hi)`` of ``batch``."""

    def cut(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t[lo:hi]

    return Batch(
        x=batch.x[lo:hi],
        y=batch.y[lo:hi],
        dense=cut(batch.dense),
        bags=cut(batch.bags),
        extra=batch.extra,
        rows=cut(batch.rows),
    )


class ShardedBatches:
    """The global batches of ``batches``, each cut into ``world_size`` contiguous parts; rank
    ``rank`` gets its part. The union of the parts of a step is the batch one process would train
    on at that step. A last batch with fewer rows than processes is dropped (each part needs a
    row)."""

    def __init__(self, batches: BatchIterator, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __len__(self) -> int:
        n = len(self.batches)
        last = self.batches.shard_rows - (n - 1) * self.batches.batch_size
        return n - 1 if n and not self.batches.drop_last and last < self.world_size else n

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        for batch in self.batches.epoch(epoch, start):
            if len(batch) < self.world_size:
                return
            yield batch_part(batch, *shard_bounds(len(batch), self.rank, self.world_size))


def eval_batches(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """The batch numbers ``[first, last)`` of ``count`` evaluation batches that ``rank`` scores."""
    return shard_bounds(count, rank, world_size)


# ---------------------------------------------------------------------------------------------
# Collectives


def _all_gather_rows(ctx: Context, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor (same length on one rank, any length across ranks) gathered along dim 0,
    concatenated in rank order, on every rank."""
    size = torch.tensor([tensors[0].shape[0]], dtype=torch.int64, device=ctx.device)
    sizes = [torch.zeros_like(size) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    longest = max(counts)
    out = []
    for t in tensors:
        padded = t.new_zeros((longest, *t.shape[1:]), device=ctx.device)
        padded[: t.shape[0]] = t.to(ctx.device)
        parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts)]).to(t.device))
    return out


def average_dense(ctx: Context, params: Sequence[torch.Tensor], rows: int) -> float:
    """Replace each ``.grad`` by ``Σ_r n_r g_r / Σ_r n_r`` (``n_r``: this rank's ``rows``); a
    gradient absent on every rank stays absent. Returns ``Σ_r n_r``. One all-reduce (float64)."""
    flat = [torch.tensor([float(rows)], dtype=torch.float64)]
    flat += [torch.tensor([0.0 if p.grad is None else 1.0], dtype=torch.float64) for p in params]
    for p in params:
        g = torch.zeros_like(p) if p.grad is None else p.grad
        flat.append(g.detach().reshape(-1).to(torch.float64) * rows)
    buf = torch.cat([t.to(ctx.device) for t in flat])
    dist.all_reduce(buf)
    total = float(buf[0])
    present, pos = buf[1 : 1 + len(params)], 1 + len(params)
    for p, flag in zip(params, present.tolist()):
        n = p.numel()
        grad = (buf[pos : pos + n] / total).view_as(p).to(device=p.device, dtype=p.dtype)
        p.grad = grad if flag > 0 else None
        pos += n
    return total


def average_sparse(ctx: Context, table: torch.Tensor, rows: int, total: float) -> None:
    """The same for a sparse embedding table: the rows each rank touched and their gradients are
    gathered and summed into one coalesced sparse gradient, identical on every rank."""
    idx, vals = _touched_rows(table)
    idx, vals = _all_gather_rows(ctx, [idx, vals.to(torch.float64) * rows])
    if idx.numel() == 0:
        table.grad = None
        return
    shape = table.shape
    merged = torch.sparse_coo_tensor(idx.unsqueeze(0), vals, shape, check_invariants=True)
    merged = merged.coalesce()
    table.grad = torch.sparse_coo_tensor(
        merged.indices(),
        (merged.values() / total).to(table.dtype),
        table.shape,
        is_coalesced=True,
        check_invariants=False,
    )


def _touched_rows(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row ids, row gradients) of a table's sparse gradient, merged; empty without one."""
    g = table.grad
    if g is None:
        empty = torch.zeros((0,), dtype=torch.int64, device=table.device)
        return empty, table.new_zeros((0, *table.shape[1:]))
    if not g.is_sparse:
        raise ValueError("a distributed run expects sparse gradients on embedding tables")
    g = g.coalesce()
    return g.indices()[0], g.values()


def _float_buffers(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    return [b for m in modules for b in m.buffers() if torch.is_floating_point(b)]


def _state_tensors(modules: Sequence[nn.Module]) -> list[torch.Tensor]:
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


class Replicas:
    """The collectives that keep the replicas of a distributed run identical.

    Built once the model and the policy exist: rank 0's initial state is broadcast, each rank's
    torch generator is re-seeded for its own dropout masks and Gumbel noise, and the policy's
    optimiser is given :meth:`average_policy_gradients`.
    """

    def __init__(self, ctx: Context, model: nn.Module, policy: nn.Module, seed: int) -> None:
        self.ctx = ctx
        self.modules = (model, policy)
        self.tables, self.dense = split_parameters(model)
        #: rows of the batch the policy's next step learns from (set by the trainer)
        self.policy_rows = 0
        self.broadcast_state()
        rank_seed = np.random.SeedSequence([seed, ctx.rank]).generate_state(1)[0]
        torch.manual_seed(int(rank_seed))
        set_sync = getattr(policy, "set_grad_sync", None)
        if callable(set_sync):
            set_sync(self.average_policy_gradients)

    def broadcast_state(self) -> None:
        """Every parameter and buffer of rank 0, on every rank."""
        for t in _state_tensors(self.modules):
            buf = t.detach().to(self.ctx.device)
            dist.broadcast(buf, 0)
            t.data.copy_(buf)

    def agree_step(self, finite: bool, rows: int) -> tuple[bool, int]:
        """(every rank's loss was finite, the rows of the global batch)."""
        flags = torch.tensor([0 if finite else 1, rows], dtype=torch.int64, device=self.ctx.device)
        dist.all_reduce(flags)
        return int(flags[0]) == 0, int(flags[1])

    def average_gradients(self, rows: int) -> None:
        """The recommender's gradients: their row-weighted mean over the ranks."""
        total = average_dense(self.ctx, self.dense, rows)
        for table in self.tables:
            average_sparse(self.ctx, table, rows, total)

    def average_policy_gradients(self, params: Sequence[nn.Parameter]) -> None:
        """The policy's optimiser hook: the same for its parameters (``policy_rows``)."""
        average_dense(self.ctx, list(params), self.policy_rows)

    def average_buffers(self) -> None:
        """Running statistics (BatchNorm, SLF's loss scales) come from each rank's own rows:
        their mean over the ranks keeps the replicas identical."""
        bufs = _float_buffers(self.modules)
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).to(self.ctx.device, torch.float64) for b in bufs])
        dist.all_reduce(flat)
        flat /= self.ctx.world_size
        pos = 0
        for b in bufs:
            n = b.numel()
            b.copy_(flat[pos : pos + n].view_as(b))
            pos += n

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean over the ranks of each of ``values``."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(t)
        return (t / self.ctx.world_size).tolist()

    def main_decides(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (decisions taken on a clock)."""
        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.ctx.device)
        dist.broadcast(t, 0)
        return bool(t[0])

    def gather_states(self, state: Any) -> list[Any]:
        """Every rank's ``state`` (tensors, numbers, strings), in rank order. Sent as
        ``torch.save`` bytes: ``all_gather_object`` cannot unpickle tensors it did not move."""
        buf = io.BytesIO()
        torch.save(state, buf)
        out: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(out, buf.getvalue())
        return [torch.load(io.BytesIO(b), weights_only=True) for b in out]

    def gather_predictions(
        self, logits: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's rows of a split, concatenated in rank order (the split's order)."""
        t_logits, t_y = _all_gather_rows(
            self.ctx, [torch.from_numpy(np.ascontiguousarray(logits)), torch.from_numpy(y)]
        )
        return t_logits.numpy(), t_y.numpy()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself in one process)."""
    if context() is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]
