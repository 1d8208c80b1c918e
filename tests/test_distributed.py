"""One run across processes (torch.distributed, gloo on CPU): the same optimisation as one process.

Two ranks with half of each batch against one process with the whole batch, in float64: the same
dense parameters, touched embedding rows, Adam moments and controller; untouched rows unchanged;
the replicas identical (digests) after every step; evaluation gathered without duplicated rows;
a resume under two ranks equal to an uninterrupted run; ``--nproc 2`` and two "nodes" on loopback
giving the same run. The ranks run under ``torch.distributed.run`` (this file is also the worker
script); a 120 s collective timeout and per-test timeouts (hang guards, about ten times the
loaded run time) make a hang fail.
"""

from __future__ import annotations

import faulthandler
import hashlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autoloss.data.batches import BatchIterator
from autoloss.data.store import open_dataset
from autoloss.errors import CheckpointError
from autoloss.metrics import evaluate
from autoloss.train import distributed, failures, replicas
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer
from encoded_fixtures import write_encoded_dataset

STEPS = 6  # recommender steps compared (controller updates every 2)
STOP_AT = 10  # the interrupted run stops at this step's evaluation (its checkpoint: step 5)
VOLATILE = {"train_seconds", "train_rows_per_second", "autoloss_version"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--max-restarts", "0"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", failures.TIMEOUT_ENV: "120"}


def equality_cfg(data: Path) -> RunConfig:
    """No BatchNorm, no dropout, a controller without hidden layers (no BatchNorm either) and no
    Gumbel noise: a half batch computes exactly its share of the whole batch's gradient."""
    cfg = RunConfig()
    cfg.data.path, cfg.data.eval_batch_size = str(data), 500
    cfg.model.name, cfg.model.embed_dim, cfg.model.mlp = "deepfm", 4, [8]
    cfg.model.batch_norm, cfg.model.dropout, cfg.model.embedding_l2 = False, 0.0, 1e-3
    cfg.loss.method, cfg.loss.update_every = "autoloss-soft", 2
    cfg.loss.controller_hidden, cfg.loss.controller_lr = [], 1e-2
    cfg.optim.batch_size, cfg.optim.lr = 63, 1e-2  # odd: parts of 31 and 32 rows
    cfg.train.device, cfg.train.progress, cfg.train.num_threads = "cpu", "off", 1
    return cfg


def resume_cfg(data: Path, out: Path) -> RunConfig:
    """The default-like model (BatchNorm, dropout) and Gumbel noise: what a real run uses."""
    cfg = RunConfig()
    cfg.data.path, cfg.data.eval_batch_size, cfg.out = str(data), 500, str(out)
    cfg.model.embed_dim, cfg.model.mlp, cfg.loss.method = 4, [16, 16], "autoloss"
    cfg.optim.batch_size, cfg.train.epochs = 200, 2
    cfg.train.eval_every_steps, cfg.train.checkpoint_every, cfg.train.log_every = 5, 5, 3
    cfg.train.device, cfg.train.progress, cfg.train.num_threads = "cpu", "off", 1
    return cfg


CLI_ARGS = [
    "--model", "deepfm", "--embed-dim", "4", "--mlp", "16,16", "--batch-size", "200",
    "--epochs", "1", "--loss", "autoloss", "--device", "cpu", "--progress", "off",
    "--threads", "1", "--set", "data.eval_batch_size=500",
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The worker (each rank, under torch.distributed.run)


#: Logging statistics of a rank's own rows (the mean α since the last log line), not state.
LOCAL_STATS = ("alpha_sum",)


def _tensors(obj: Any, name: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if k not in LOCAL_STATS:
                yield from _tensors(obj[k], f"{name}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{name}.{i}")


def _everything(trainer: Trainer) -> dict[str, Any]:
    return {
        "model": trainer.model.state_dict(),
        "policy": trainer.policy.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
    }


def _digest(trainer: Trainer) -> str:
    h = hashlib.sha256()
    for _, t in _tensors(_everything(trainer)):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _double_trainer(data: Path) -> Trainer:
    trainer = Trainer(equality_cfg(data), log=lambda s: None)
    trainer.model.double()
    trainer.policy.double()
    return trainer


def _equality_worker(data: Path, out: Path, rank: int) -> None:
    trainer = _double_trainer(data)
    initial = trainer.model.embedding.embedding.weight.detach().clone()
    digests, rows = [], []
    for batch in itertools.islice(trainer._iterator("train", train=True).epoch(0), STEPS):
        trainer.train_step(batch)
        digests.append(_digest(trainer))
        rows.append(batch.rows.tolist())
    logits, y = trainer.predict_split("valid")
    saved = {
        "state": _everything(trainer),
        "initial": initial,
        "digests": digests,
        "rows": rows,
        "logits": logits,
        "y": y,
        "metrics": evaluate(y, logits, "binary"),
        "evaluated": trainer.evaluate_split("valid"),
    }
    torch.save(saved, out / f"rank{rank}.pt")


#: Methods whose replicas must stay identical with BatchNorm, dropout and per-rank noise.
REAL_METHODS = {"autoloss": {"loss.hard": True}, "slf": {}, "darts": {"loss.mode": "unrolled"}}


def _real_methods_worker(data: Path, out: Path, rank: int) -> None:
    digests = {}
    for method, extra in REAL_METHODS.items():
        cfg = resume_cfg(data, out / method)
        cfg.loss.method, cfg.loss.update_every = method, 2
        for key, value in extra.items():
            cfg.set(key, value)
        trainer = Trainer(cfg, log=lambda s: None)
        digests[method] = []
        for batch in itertools.islice(trainer._iterator("train", train=True).epoch(0), 4):
            trainer.train_step(batch)
            digests[method].append(_digest(trainer))
    torch.save(digests, out / f"real{rank}.pt")


class _Stop(Exception):
    pass


def _resume_worker(data: Path, out: Path, rank: int) -> None:
    real = Trainer._evaluate_and_track

    def stop_at(self: Trainer, *args: Any) -> bool:
        if self.step >= STOP_AT:
            raise _Stop
        return real(self, *args)

    cfg = resume_cfg(data, out / "interrupted")
    Trainer._evaluate_and_track = stop_at  # type: ignore[method-assign]
    try:
        train_run(cfg, log=lambda s: None)
    except _Stop:
        pass
    finally:
        Trainer._evaluate_and_track = real  # type: ignore[method-assign]
    if rank == 0:  # for the refusal of another world size (the resume consumes the original)
        shutil.copytree(out / "interrupted", out / "kept")
    train_run(cfg, resume=True, log=lambda s: None)
    train_run(resume_cfg(data, out / "straight"), log=lambda s: None)


def worker(data: str, out: str) -> None:
    with distributed.process_group("cpu") as ctx:
        assert ctx is not None and ctx.world_size == 2
        _equality_worker(Path(data), Path(out), ctx.rank)
        _real_methods_worker(Path(data), Path(out), ctx.rank)
        _resume_worker(Path(data), Path(out), ctx.rank)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_encoded_dataset(tmp_path_factory.mktemp("dist") / "tiny", rows=3000)


@pytest.fixture(scope="module")
def two_ranks(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ranks")
    cmd = [
        *TORCHRUN,
        "--standalone",
        "--nproc-per-node",
        "2",
        __file__,
        "worker",
        str(data),
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=480, env=_env())
    assert proc.returncode == 0, proc.stderr[-12000:]
    return out


@pytest.fixture(scope="module")
def reference(data: Path) -> dict[str, Any]:
    """One process, the whole batch, the same steps."""
    trainer = _double_trainer(data)
    initial = trainer.model.embedding.embedding.weight.detach().clone()
    controller = trainer.policy.state_dict()["selector.network.head.weight"].clone()
    rows = []
    for batch in itertools.islice(trainer._iterator("train", train=True).epoch(0), STEPS):
        trainer.train_step(batch)
        rows.append(batch.rows.tolist())
    state = _everything(trainer)
    return {"trainer": trainer, "initial": (initial, controller), "rows": rows, "state": state}


def _ranks(out: Path) -> list[dict[str, Any]]:
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


def _outcome(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = json.loads((run / "result.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    strip = lambda d: {k: v for k, v in d.items() if k not in VOLATILE}  # noqa: E731
    return strip(result), [strip(r) for r in records]


# ---------------------------------------------------------------------------------------------
# Tests without processes


def test_shards_are_disjoint_and_cover_each_batch(data: Path) -> None:
    it = BatchIterator(open_dataset(str(data)).split("train"), 100, seed=3)
    whole = [b.rows.tolist() for b in it.epoch(1)]
    parts = [
        [b.rows.tolist() for b in replicas.ShardedBatches(it, r, 3).epoch(1)] for r in range(3)
    ]
    assert all(len(p) == len(whole) == len(replicas.ShardedBatches(it, 0, 3)) for p in parts)
    for step, rows in enumerate(whole):
        got = [parts[r][step] for r in range(3)]
        assert sorted(itertools.chain(*got)) == sorted(rows)  # covering, none twice
        assert max(len(g) for g in got) - min(len(g) for g in got) <= 1
    bounds = [replicas.shard_bounds(301, r, 4) for r in range(4)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 301
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))


def test_a_last_batch_smaller_than_the_world_is_dropped() -> None:
    class Split:
        x = np.zeros((9, 1), np.int32)
        y = np.zeros(9, np.int32)
        dense = bags = None

        def __len__(self) -> int:
            return 9

    it = BatchIterator(Split(), 4, shuffle=False)  # type: ignore[arg-type]
    sharded = replicas.ShardedBatches(it, 1, 2)
    assert len(sharded) == 2 == len(list(sharded.epoch(0)))


# ---------------------------------------------------------------------------------------------
# Two ranks against one process


@pytest.mark.timeout(600)
def test_two_ranks_match_one_process(two_ranks: Path, reference: dict[str, Any]) -> None:
    ranks = _ranks(two_ranks)
    for step in range(STEPS):  # the ranks' parts make up the whole batch
        both = ranks[0]["rows"][step] + ranks[1]["rows"][step]
        assert sorted(both) == sorted(reference["rows"][step])
        assert not set(ranks[0]["rows"][step]) & set(ranks[1]["rows"][step])
    got, want = list(_tensors(ranks[0]["state"])), list(_tensors(reference["state"]))
    assert len(got) == len(want) and len(got) > 10
    for (name, g), (_, w) in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        if g.is_floating_point():
            assert torch.allclose(g, w, rtol=1e-7, atol=1e-12), (name, (g - w).abs().max())
        else:
            assert torch.equal(g, w), name
    initial, controller = reference["initial"]
    assert torch.equal(ranks[0]["initial"], initial)
    table = ranks[0]["state"]["model"]["embedding.embedding.weight"]
    moments = reference["state"]["optimizer"]["sparse"]["state"][0]["moments"][:, 1]
    untouched = moments.abs().sum(1) == 0  # rows no batch looked up
    assert 0 < int(untouched.sum()) < len(table)
    assert torch.equal(table[untouched], initial[untouched])
    assert not torch.equal(table[~untouched], initial[~untouched])
    learnt = ranks[0]["state"]["policy"]["selector.network.head.weight"]
    assert not torch.allclose(learnt, controller.double())  # it learnt, like the one above


@pytest.mark.timeout(600)
def test_replicas_identical_after_every_step(two_ranks: Path) -> None:
    ranks = _ranks(two_ranks)
    assert len(ranks[0]["digests"]) == STEPS
    assert ranks[0]["digests"] == ranks[1]["digests"]
    assert len(set(ranks[0]["digests"])) == STEPS  # the state changed at every step
    real = [torch.load(two_ranks / f"real{r}.pt", weights_only=True) for r in range(2)]
    assert real[0] == real[1] and sorted(real[0]) == sorted(REAL_METHODS)


@pytest.mark.timeout(600)
def test_gathered_evaluation_equals_one_process(two_ranks: Path, reference: dict[str, Any]) -> None:
    ranks = _ranks(two_ranks)
    trainer = reference["trainer"]
    trainer.model.load_state_dict(ranks[0]["state"]["model"])
    logits, y = trainer.predict_split("valid")  # one process, rank 0's model
    for r in ranks:
        assert np.array_equal(r["y"], y)  # every row once, in the split's order
        assert np.allclose(r["logits"], logits, rtol=1e-6, atol=1e-9)
        assert r["evaluated"] == r["metrics"]
        single = evaluate(y, logits, "binary")
        assert r["metrics"]["auc"] == pytest.approx(single["auc"], abs=1e-12)
        assert r["metrics"]["logloss"] == pytest.approx(single["logloss"], rel=1e-9)


@pytest.mark.timeout(600)
def test_resume_under_two_ranks_equals_an_uninterrupted_run(two_ranks: Path) -> None:
    resumed, straight = _outcome(two_ranks / "interrupted"), _outcome(two_ranks / "straight")
    assert resumed == straight
    assert resumed[0]["world_size"] == 2 and resumed[0]["steps"] == 24
    for run in ("interrupted", "straight"):
        assert not (two_ranks / run / "checkpoint.pt").exists()
        assert not list((two_ranks / run).glob(".*tmp"))


@pytest.mark.timeout(600)
def test_resume_at_another_world_size_is_refused(two_ranks: Path, data: Path) -> None:
    kept = two_ranks / "kept"
    state = torch.load(kept / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    with pytest.raises(CheckpointError, match=r"2 process\(es\), this run has 1"):
        train_run(resume_cfg(data, kept), resume=True, log=lambda s: None)


# ---------------------------------------------------------------------------------------------
# The command line: --nproc, and two nodes on loopback


@pytest.fixture(scope="module")
def nproc_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    cmd = [sys.executable, "-m", "autoloss", "train", "--nproc", "2", "--data", str(data)]
    proc = subprocess.run(
        [*cmd, "--out", str(out), *CLI_ARGS],
        capture_output=True,
        text=True,
        timeout=480,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-12000:]
    assert proc.stdout.count("run: ") == 1  # rank 0 alone reports
    return out


@pytest.mark.timeout(600)
def test_train_nproc_two(nproc_run: Path) -> None:
    result, records = _outcome(nproc_run)
    assert result["world_size"] == 2 and result["test"]["auc"] > 0.7
    assert [r["epoch"] for r in records if r["type"] == "eval"] == [1]
    names = sorted(p.name for p in nproc_run.iterdir())
    written = [
        "config.yaml",
        "controller.pt",
        "dataset",
        "metrics.jsonl",
        "model.pt",
        "result.json",
    ]
    digests = ["controller.pt.sha256", "model.pt.sha256", "result.json.sha256"]
    assert names == sorted(written + digests)  # rank 0 alone writes: no lock, no temporary left


def test_train_nproc_user_errors_are_one_line(data: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "autoloss", "train", "--data", str(data), "--out", str(tmp_path)]
    for extra in (["--nproc", "0"], ["--nproc", "2", "--loss", "search"]):
        proc = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_cmd(node: int, port: int, data: Path, out: Path) -> list[str]:
    """torchrun on "node" ``node`` of two (static rendezvous on loopback), one process each."""
    return [
        *TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
        "--master-addr", "127.0.0.1", "--master-port", str(port), "--rdzv-conf", "timeout=120",
        "-m", "autoloss", "train", "--data", str(data), "--out", str(out), *CLI_ARGS,
    ]  # fmt: skip


@pytest.mark.timeout(600)
def test_two_nodes_on_loopback(data: Path, nproc_run: Path, tmp_path: Path) -> None:
    out, port = tmp_path / "run", _free_port()
    nodes = [
        subprocess.Popen(_node_cmd(node, port, data, out), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env())
        for node in (0, 1)
    ]  # fmt: skip
    try:
        outputs = [p.communicate(timeout=480) for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    assert [p.returncode for p in nodes] == [0, 0], [o[1][-3000:] for o in outputs]
    assert "run: " in outputs[0][0] and "run: " not in outputs[1][0]
    assert _outcome(out) == _outcome(nproc_run)  # two nodes compute what two local ranks do


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    faulthandler.enable()  # an abort (SIGABRT) prints every thread's Python stack
    worker(sys.argv[2], sys.argv[3])
