"""docs/examples/torchrec_dlrm.py: TorchRec's DLRM, tables sharded table-wise over 2 CPU ranks
(gloo), trained with AutoLoss as the criterion, on a small click log prepared here with a numeric
(dense) field, two categorical fields and a multi-valued one (jagged KeyedJaggedTensor keys)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autoloss.cli import main as autoloss_main

# Skip without TorchRec; looked up, not imported (importing it here would cost the suite ~10 s,
# the example imports it in its own processes).
if importlib.util.find_spec("torchrec") is None:
    pytest.skip("needs torchrec (pip install --no-deps torchrec==1.8.0)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "torchrec_dlrm.py"
STEPS = 42  # 6 controller updates (update_every=7)
SCHEMA = """\
label: click
task: binary
categorical: [user, item]
numeric: {price: none}
multivalue: {tags: "|"}
"""


def write_click_log(path: Path, rows: int = 6000) -> None:
    """Clicks from a user effect, an item effect, the price and one tag: signal for an AUC."""
    rng = np.random.default_rng(0)
    user, item = rng.integers(0, 40, rows), rng.integers(0, 60, rows)
    price = rng.normal(0, 1, rows)
    tags = [rng.choice(list("abcdef"), rng.integers(1, 4), replace=False) for _ in range(rows)]
    score = rng.normal(0, 1.5, 40)[user] + rng.normal(0, 1.5, 60)[item] - price
    score += np.array([1.5 if "a" in t else 0.0 for t in tags])
    click = rng.random(rows) < 1 / (1 + np.exp(-score))
    lines = ["user,item,price,tags,click"]
    for r in range(rows):
        lines.append(f"u{user[r]},i{item[r]},{price[r]:.3f},{'|'.join(tags[r])},{int(click[r])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def click_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clicks")
    write_click_log(root / "log.csv")
    (root / "schema.yaml").write_text(SCHEMA, encoding="utf-8")
    argv = ["prepare", "--format", "csv", "--input", str(root / "log.csv")]
    argv += ["--schema", str(root / "schema.yaml"), "--out", str(root / "data"), "--quiet"]
    assert autoloss_main(argv) == 0
    return root / "data"


def run_example(data: Path, nproc: int | None) -> dict:  # type: ignore[type-arg]
    """The example's JSON line: under torchrun with ``nproc`` ranks, or (None) as plain Python."""
    cmd = [sys.executable]
    if nproc is not None:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
        cmd += ["--max-restarts", "0"]
    cmd += [str(EXAMPLE), "--data", str(data), "--steps", str(STEPS), "--batch-size", "128"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(200)
def test_dlrm_on_two_ranks_trains_with_autoloss(click_data: Path) -> None:
    out = run_example(click_data, 2)
    assert out["world_size"] == 2 and out["steps"] == STEPS
    ranks = out["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in ranks)  # both ranks trained
    # table-wise: each rank holds only its own tables, together all of them
    held = [set(r["tables"]) for r in ranks]
    assert all(held) and not held[0] & held[1]
    assert held[0] | held[1] == {"user", "item", "tags"}
    # one controller: the ranks averaged its gradients, so their copies are equal
    assert ranks[0]["controller"] == ranks[1]["controller"]
    assert out["controller_updates"] == STEPS // 7
    after, before = out["mean_probabilities"], out["initial_probabilities"]
    assert list(after) == ["focal", "kl", "hinge", "ce"]
    assert sum(after.values()) == pytest.approx(1.0, abs=1e-5)
    assert max(abs(p - 0.25) for p in after.values()) > 0.01  # not uniform
    assert max(abs(after[k] - before[k]) for k in after) > 1e-3  # the controller learnt
    assert 0.5 < out["test_auc"] < 1.0


@pytest.mark.slow  # ~10 s: the single-process path (a world of one, no torchrun)
@pytest.mark.timeout(200)
def test_dlrm_in_one_process(click_data: Path) -> None:
    out = run_example(click_data, None)
    assert out["world_size"] == 1 and out["controller_updates"] == STEPS // 7
    assert set(out["ranks"][0]["tables"]) == {"user", "item", "tags"}
    assert 0.5 < out["test_auc"] < 1.0


def test_without_torchrec_one_line_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchrec", None)  # `import torchrec` raises ImportError
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    message = str(exc.value.code)
    assert "\n" not in message
    assert (
        "pip install 'autoloss-rec[torchrec]' && pip install --no-deps torchrec==1.8.0" in message
    )
