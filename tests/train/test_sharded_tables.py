"""Embedding tables sharded across processes by TorchRec (``train.embeddings=sharded``).

Two CPU processes (gloo, table-wise): each holds only its tables, each writes its own beside
``model.pt``, and ``load_run`` reads them into a model that serves like a replicated run's, a ``kill -9`` and ``--resume`` give the run an
uninterrupted one gives bit for bit, and sharded and replicated training reach the same test AUC
within seed noise. The refusals are one line. This file is also the worker of the last test
(``python -m torch.distributed.run ... test_sharded_tables.py agree DATA OUT``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import torch

pytest.importorskip("torchrec", reason="sharded tables need the 'torchrec' extra")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # as a torchrun worker

from autoloss.cli import main
from autoloss.train import failures
from encoded_fixtures import write_encoded_dataset

SHARDED = [
    "--set", "train.embeddings=sharded", "--set", "optim.table_optimizer=rowwise_adagrad",
    "--set", "optim.embedding_lr=0.02", "--set", "optim.clip_norm=0",
]  # fmt: skip
COMMON = [
    "--model", "deepfm", "--embed-dim", "8", "--mlp", "16,16", "--batch-size", "200",
    "--loss", "autoloss", "--device", "cpu", "--progress", "off", "--threads", "1",
    "--set", "data.eval_batch_size=500", "--set", "train.log_every=5",
]  # fmt: skip
VOLATILE = {"train_seconds", "train_rows_per_second", "autoloss_version"}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", failures.TIMEOUT_ENV: "120"}


def _cli(*args: str, timeout: float = 240, **popen: Any) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "autoloss", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tables of the same size: table-wise over two processes, two each."""
    root = tmp_path_factory.mktemp("sharded") / "tiny"
    return write_encoded_dataset(root, rows=4000, vocab=(40, 40, 40, 40))


def _train(data: Path, out: Path, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    args = ["train", "--data", str(data), "--out", str(out), *COMMON, *SHARDED, *extra]
    return _cli(*args, "--nproc", str(nproc))


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    proc = _train(data, out, "--epochs", "2", "--set", "train.checkpoint_every=5")
    assert proc.returncode == 0, proc.stderr[-6000:]
    return out


# ---------------------------------------------------------------------------------------------
# One line, exit 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["--set", "optim.table_optimizer=adam"], "FBGEMM has no CPU kernel for Adam"),
        (["--set", "loss.mode=unrolled"], "use loss.mode=first-order"),
        (["--model", "lr"], "model lr has no embedding tables to shard"),
        (["--loss", "search"], "--loss search trains its trials in one process"),
        (["--set", "optim.lazy_embeddings=false"], "optim.lazy_embeddings=false"),
        (["--set", "optim.lr_decay_on_plateau=0.5"], "optim.lr_decay_on_plateau"),
        (["--embed-dim", "6"], "embed_dim divisible by 4"),
    ],
)
def test_what_sharded_tables_cannot_do_is_one_line(
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    settings: list[str],
    message: str,
) -> None:
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), *COMMON]
    args += [*SHARDED, *settings]
    if "optim.table_optimizer=adam" in settings:  # the last --set wins
        args += ["--set", "optim.table_optimizer=adam"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_without_torchrec_the_error_says_how_to_install_it(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec -> ImportError
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), *COMMON, *SHARDED]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install 'autoloss-rec[torchrec]' && pip install --no-deps torchrec==1.8.0" in err


# ---------------------------------------------------------------------------------------------
# Two processes


def test_each_process_holds_only_its_tables(straight: Path) -> None:
    placement = json.loads((straight / "tables.json").read_text())
    assert placement["world_size"] == 2
    ranks = placement["ranks"]
    held = [set(r["tables"]) for r in ranks]
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == {"c0", "c1", "c2", "c3"}
    total = placement["replicated_bytes"]
    assert total == 4 * 40 * 8 * 4  # four tables of 40 rows x 8 float32
    for r in ranks:
        assert sum(r["bytes"].values()) == total // 2  # 1/N of the replicated tables


def test_the_tables_beside_model_pt_serve_like_a_replicated_run(
    straight: Path, tmp_path: Path
) -> None:
    from autoloss.metrics import evaluate
    from autoloss.train.run import load_run
    from autoloss.train.trainer import predict_logits

    assert not (straight / "checkpoint-tables").exists()  # a finished run keeps no checkpoint
    saved = torch.load(straight / "model.pt", weights_only=True)
    assert saved["tables"] == "model-tables" and (straight / "model-tables").is_dir()
    assert not any("tables" in k for k in saved["state_dict"])  # nothing gathered in training
    loaded = load_run(straight)
    weight = loaded.model.embedding.embedding.weight
    assert weight.shape == (4 * 40 + 1, 8) and bool((weight[-1] == 0).all())
    from autoloss.data.batches import BatchIterator
    from autoloss.data.store import open_dataset

    ds = open_dataset(loaded.cfg.data.path)
    it = BatchIterator(ds.split("test"), 500, shuffle=False)
    logits, y = predict_logits(loaded.model, iter(it.epoch(0)), torch.device("cpu"))
    result = json.loads((straight / "result.json").read_text())
    assert math.isclose(evaluate(y, logits, "binary")["auc"], result["test"]["auc"], abs_tol=1e-6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "a file of the sharded tables beside model.pt is missing"),
        ("flipped", "this file of the sharded tables beside model.pt is damaged: its SHA-256"),
        ("truncated", "this file of the sharded tables beside model.pt is truncated"),
        ("no digests", "the sharded tables beside model.pt cannot be read"),
    ],
)
def test_a_missing_or_damaged_table_file_is_one_line(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shard = next((run / "model-tables").glob("__1_*.distcp"))
    if damage == "flipped":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 1
        shard.write_bytes(bytes(data))
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:100])
    else:
        shard.unlink()
    if damage == "no digests":  # an older run: read unchecked, DCP's own error
        (run / "model-tables" / "digests.json").unlink()
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    if damage != "no digests":
        assert err.startswith(f"autoloss evaluate: error: {shard}: "), err


def test_each_process_checks_the_files_it_wrote(straight: Path, tmp_path: Path) -> None:
    """A resume reads each process's shards on that process: each checks its own files."""
    import shutil

    from autoloss.train.table_files import check_intact

    where = tmp_path / "tables"
    shutil.copytree(straight / "model-tables", where)
    recorded = json.loads((where / "digests.json").read_text())["files"]
    assert {n for n in recorded if n.startswith("__")} == {"__0_0.distcp", "__1_0.distcp"}
    assert ".metadata" in recorded
    assert all(check_intact(where, r, "t", "h") is None for r in (0, 1, None))
    shard = where / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[::-1])
    assert check_intact(where, 0, "t", "h") is None
    for rank in (1, None):
        error = check_intact(where, rank, "t", "h")
        assert error is not None and error.path == str(shard), error


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_and_resume_equals_an_uninterrupted_run(
    data: Path, straight: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    args = ["train", "--data", str(data), "--out", str(out), *COMMON, *SHARDED]
    args += ["--epochs", "2", "--set", "train.checkpoint_every=5", "--nproc", "2"]
    cmd = [sys.executable, "-m", "autoloss", *args]
    proc = subprocess.Popen(cmd, env=_env(), start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline:  # tables first
        assert proc.poll() is None, proc.stderr.read().decode()[-4000:] if proc.stderr else ""
        time.sleep(0.05)
    # torch's launcher starts each rank in a session of its own: killing the launcher's group
    # alone would leave the ranks to finish the run uninterrupted
    ranks = psutil.Process(proc.pid).children(recursive=True)
    assert len(ranks) >= 2, ranks
    for rank in ranks:
        rank.kill()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    psutil.wait_procs(ranks, timeout=30)
    # killed before the first evaluation (16 steps an epoch): no best weights in the checkpoint
    assert (out / "checkpoint.pt").exists() and not (out / "result.json").exists()
    assert torch.load(out / "checkpoint.pt", weights_only=True)["best_state"] is None
    resumed = _cli(*args, "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-6000:]
    a, b = _outcome(straight), _outcome(out)
    assert a == b
    from autoloss.train.run import load_run

    sa, sb = load_run(straight).model.state_dict(), load_run(out).model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _outcome(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = json.loads((run / "result.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    strip = lambda d: {k: v for k, v in d.items() if k not in VOLATILE}  # noqa: E731
    return strip(result), [strip(r) for r in records]


def test_the_tables_gradient_takes_the_share_set_after_the_forward_pass() -> None:
    """The trainer sets this process's share of the global batch (``grad_scale``) once every
    process has counted its rows, after the forward pass: the backward pass takes that share,
    not the previous step's (1.0 at the first step of a run and of a resume)."""
    from autoloss.data.spec import FeatureSpec
    from autoloss.models.torchrec_tables import TorchRecFieldEmbedding

    spec = FeatureSpec(cat_names=("a", "b"), cat_vocab=(3, 5), bag_names=("g",), bag_vocab=(4,))
    emb = TorchRecFieldEmbedding(spec, 4)
    pooled = {k: torch.ones(2, 4, requires_grad=True) for k in ("c0", "c1", "b0")}

    class Lookup(torch.nn.Module):  # the sharded lookup's output, as leaves to read grads from
        def forward(self, features: object) -> object:
            return type("Pooled", (), {"to_dict": lambda _: pooled})()

    emb.tables = Lookup()
    x, bags = torch.tensor([[0, 1], [2, 4]]), torch.tensor([[[1, -1]], [[-1, -1]]])
    for before, after in ((1.0, 0.5), (0.5, 0.25), (0.25, 1.0)):
        emb.grad_scale = before
        out = emb(x, bags=bags)
        emb.grad_scale = after  # what ShardedSync.agree_step does for this step
        out.sum().backward()
        for t in pooled.values():
            assert t.grad is not None and torch.equal(t.grad, torch.full((2, 4), after))
            t.grad = None


# ---------------------------------------------------------------------------------------------
# Every model, every first-order policy

MODELS = ("fm", "deepfm", "ipnn", "nfm", "autoint", "widedeep", "dcn", "dcnv2", "xdeepfm")
POLICIES = (("autoloss", {}), ("darts", {}), ("slf", {}), ("uniform", {}), ("focal", {}),
            ("reweight", {"reweight_mode": "first-order"}))  # fmt: skip


def zoo_worker(data: str, out: str) -> None:
    """One process: a few sharded steps of every model (CE) and of DeepFM with every first-order
    policy; each run's test AUC, or its error."""
    from autoloss.train.config import RunConfig
    from autoloss.train.run import train_run

    def run(model: str, method: str, loss: dict[str, Any]) -> float | str:
        cfg = RunConfig()
        cfg.data.path, cfg.data.eval_batch_size, cfg.model.name = data, 500, model
        cfg.model.embed_dim, cfg.model.mlp, cfg.loss.method = 8, [16], method
        for key, value in loss.items():
            setattr(cfg.loss, key, value)
        cfg.optim.batch_size, cfg.optim.clip_norm = 200, 0.0
        cfg.optim.table_optimizer, cfg.optim.embedding_lr = "rowwise_adagrad", 0.05
        cfg.train.epochs, cfg.train.max_steps, cfg.train.embeddings = 1, 4, "sharded"
        cfg.train.device, cfg.train.progress, cfg.train.num_threads = "cpu", "off", 1
        cfg.train.log_every = 2
        try:
            return train_run(cfg, log=lambda s: None)[1].test["auc"]
        except Exception as exc:  # reported, not raised: every case is tried
            return f"{type(exc).__name__}: {exc}"

    results = {f"{m}/ce": run(m, "ce", {}) for m in MODELS}
    results |= {f"deepfm/{p}": run("deepfm", p, loss) for p, loss in POLICIES}
    Path(out).write_text(json.dumps(results))


def test_every_model_and_first_order_policy_trains_on_sharded_tables(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "zoo.json"
    cmd = [sys.executable, __file__, "zoo", str(data), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=_env())
    assert proc.returncode == 0, proc.stderr[-6000:]
    results = json.loads(out.read_text())
    failed = {k: v for k, v in results.items() if not isinstance(v, float)}
    assert not failed, failed
    assert all(0 < v < 1 for v in results.values())


# ---------------------------------------------------------------------------------------------
# The same step: sharded tables and replicated ones from the same weights


def one_step_worker(data: str, out: str) -> None:
    """One process: a replicated and a sharded trainer with the same weights take the same three
    steps (CE, no dropout); the largest differences of the tables and of the dense weights after
    them, and how far the tables moved."""
    from autoloss.train.config import RunConfig
    from autoloss.train.trainer import Trainer

    def cfg(embeddings: str) -> RunConfig:
        c = RunConfig()
        c.data.path, c.model.embed_dim, c.model.mlp, c.model.dropout = data, 8, [16], 0.0
        c.model.batch_norm = False  # Adam on a bias before BatchNorm amplifies rounding noise
        c.loss.method, c.optim.batch_size, c.optim.clip_norm = "ce", 500, 0.0
        c.optim.table_optimizer, c.optim.embedding_lr = "rowwise_adagrad", 0.05
        c.train.embeddings, c.train.device, c.train.num_threads = embeddings, "cpu", 1
        return c

    rep, sha = Trainer(cfg("replicated")), Trainer(cfg("sharded"))
    table = rep.model.embedding.embedding.weight.detach()
    initial = table[:160].clone()
    state = sha.model.state_dict()
    for j in range(4):  # the replicated table's rows of field j, into sharded table cj
        shard = state[f"embedding.tables.embedding_bags.c{j}.weight"].local_shards()[0].tensor
        shard.copy_(table[40 * j : 40 * (j + 1)])
    dense = {k: v for k, v in rep.model.state_dict().items() if k != "embedding.embedding.weight"}
    sha.model.load_state_dict({**state, **dense})
    batch = next(iter(rep._iterator("train", train=True).epoch(0)))
    for _ in range(3):
        rep.train_step(batch)
        sha.train_step(batch)
    after = sha.model.state_dict()
    table = rep.model.embedding.embedding.weight.detach()
    tables = max(
        float((after[f"embedding.tables.embedding_bags.c{j}.weight"].local_shards()[0].tensor
               - table[40 * j : 40 * (j + 1)]).abs().max())
        for j in range(4)
    )  # fmt: skip
    rd = rep.model.state_dict()
    dense_diff = max(
        float((rd[k].float() - after[k].float()).abs().max()) for k in dense if rd[k].numel()
    )
    moved = float((table[:160] - initial).abs().max())
    Path(out).write_text(json.dumps({"tables": tables, "dense": dense_diff, "moved": moved}))


def test_a_sharded_step_is_the_replicated_step(data: Path, tmp_path: Path) -> None:
    """Lookup, gradient and FBGEMM's row-wise Adagrad against the replicated table's own."""
    out = tmp_path / "diff.json"
    cmd = [sys.executable, __file__, "one-step", str(data), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stderr[-6000:]
    diff = json.loads(out.read_text())
    assert diff["moved"] > 1e-2, diff  # the steps did move the tables
    assert diff["tables"] < 1e-6 and diff["dense"] < 1e-6, diff


# ---------------------------------------------------------------------------------------------
# Sharded and replicated: the same test AUC within seed noise

SEEDS = range(2021, 2026)


def agree_worker(data: str, out: str) -> None:
    """Under torchrun: 5 seeds, replicated then sharded, in one process group."""
    from autoloss.train import distributed
    from autoloss.train.config import RunConfig
    from autoloss.train.run import train_run

    aucs: dict[str, list[float]] = {"replicated": [], "sharded": []}
    with distributed.process_group("cpu") as ctx:
        assert ctx is not None
        for mode in aucs:
            for seed in SEEDS:
                cfg = RunConfig()
                cfg.data.path, cfg.data.eval_batch_size = data, 500
                cfg.model.embed_dim, cfg.model.mlp, cfg.loss.method = 8, [16, 16], "autoloss"
                cfg.optim.batch_size, cfg.optim.clip_norm = 200, 0.0
                cfg.optim.table_optimizer, cfg.optim.embedding_lr = "rowwise_adagrad", 0.02
                cfg.train.epochs, cfg.train.seed, cfg.train.embeddings = 4, seed, mode
                cfg.train.device, cfg.train.progress, cfg.train.num_threads = "cpu", "off", 1
                _, result = train_run(cfg, log=lambda s: None)
                aucs[mode].append(result.test["auc"])
        if ctx.is_main:
            Path(out).write_text(json.dumps(aucs))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sharded_and_replicated_agree_within_seed_noise(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "aucs.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    cmd += ["2", "--max-restarts", "0", __file__, "agree", str(data), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=840, env=_env())
    assert proc.returncode == 0, proc.stderr[-8000:]
    aucs = json.loads(out.read_text())
    rep, sha = np.array(aucs["replicated"]), np.array(aucs["sharded"])
    noise = math.sqrt(statistics.variance(rep) / len(rep) + statistics.variance(sha) / len(sha))
    print(f"replicated {rep.mean():.4f} ± {rep.std(ddof=1):.4f}, sharded {sha.mean():.4f} ± "
          f"{sha.std(ddof=1):.4f}, difference {sha.mean() - rep.mean():+.4f} (se {noise:.4f})")  # fmt: skip
    assert rep.mean() > 0.6 and sha.mean() > 0.6  # both learnt
    assert abs(sha.mean() - rep.mean()) <= 3 * noise + 1e-3


if __name__ == "__main__" and sys.argv[1:2] == ["agree"]:
    agree_worker(sys.argv[2], sys.argv[3])
if __name__ == "__main__" and sys.argv[1:2] == ["one-step"]:
    one_step_worker(sys.argv[2], sys.argv[3])
if __name__ == "__main__" and sys.argv[1:2] == ["zoo"]:
    zoo_worker(sys.argv[2], sys.argv[3])
