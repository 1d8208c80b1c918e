"""The first steps of every ``--loss`` method: what stays the same on any machine.

A whole training compared bit for bit holds only on the CPU that recorded it (tiny kernel
differences grow over hundreds of steps). The first few steps from the same seed differ between
machines only by rounding: this module trains :data:`STEPS` steps of each golden case (same data,
same options) and records, per step, the training objective, the norm of the recommender's
gradient, the norm of the policy's own parameters (a controller's after its update) and every
scalar the policy logs
(candidate probabilities, the controller's objective). ``tests/test_first_steps.py`` compares
them within :data:`RTOL`, a tolerance measured as tests/golden/README.md says.

``python tests/golden/first_steps.py`` records ``first_steps.json``;
``python tests/golden/first_steps.py --deviation`` prints how far this machine (or these kernel
settings: ``ATEN_CPU_CAPABILITY``, ``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``, ``--threads``) is from it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
FIRST_STEPS = HERE / "first_steps.json"
sys.path.insert(0, str(HERE.parent))

from encoded_fixtures import write_encoded_dataset  # noqa: E402
from golden.fingerprint import fingerprint  # noqa: E402
from golden.training import CASES, COMMON  # noqa: E402

#: Steps per case, and the options that keep them comparable across machines: the controllers
#: learn from the first step on, and the MLP has no BatchNorm (whose normalisation of the nearly
#: constant pre-activations of a fresh model multiplies rounding differences a thousandfold).
STEPS = 4
STABLE = ["--update-every", "1", "--set", "model.batch_norm=false"]
#: Relative tolerance of every recorded figure (``math.isclose(rel_tol=RTOL, abs_tol=ATOL)``).
#: Measured on an AMD EPYC (tests/golden/README.md): kernel settings that emulate other CPUs
#: (ATen's scalar kernels, MKL's compatible path, oneDNN at SSE4.1) move the figures by at most
#: 1.1e-5, two threads by 1.6e-5; a one-percent change of one setting (lr, xi, focal γ, KL ε,
#: the controller's lr) by 8.3e-5 to 1.4e-2.
RTOL = 5e-5
#: Absolute floor for figures near zero (a gradient norm of a barely-used head, a probability
#: of a candidate that is switched off): float32 rounding of values around 1.
ATOL = 1e-6
#: ``search`` is an outer loop of trainings (each trial a ``weights`` run, which is covered).
SKIPPED = ("search",)


def _norm(params: Any) -> float:
    grads = [p.grad.detach().double().pow(2).sum() for p in params if p.grad is not None]
    return math.sqrt(float(sum(grads))) if grads else 0.0


def _param_norm(params: Any) -> float:
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params))


def run_first_steps(name: str, root: Path, threads: int = 1) -> list[dict[str, float]]:
    """Train the first :data:`STEPS` steps of golden case ``name``; one record per step."""
    from autoloss.cli import build_parser
    from autoloss.commands.train import config_from_args
    from autoloss.train.trainer import Trainer

    task, extra = CASES[name]
    data = root / f"data-{task}"
    if not data.exists():
        write_encoded_dataset(data, num_classes=2 if task == "binary" else 5)
    argv = ["train", "--data", str(data), *COMMON, *extra, *STABLE, "--threads", str(threads)]
    cfg = config_from_args(build_parser().parse_args(argv))
    cfg.train.log_every = 1
    trainer = Trainer(cfg, run_dir=None, log=lambda _line: None)
    batches = iter(trainer._iterator("train", train=True).epoch(0))
    records = []
    for _ in range(STEPS):
        batch = next(batches).to(trainer.device)
        loss = trainer.train_step(batch)
        assert loss is not None, f"{name}: non-finite loss in the first steps"
        policy_log = trainer.history[-1] if trainer.history else {}
        rec = {
            "loss": float(loss.detach()),
            "grad_norm": _norm(trainer.model.parameters()),
            "policy_norm": _param_norm(trainer.policy.parameters()),
        }
        for k, v in policy_log.items():
            if k not in ("type", "step", "rows") and isinstance(v, float | int):
                rec[f"policy.{k}"] = float(v)
        records.append(rec)
    return records


def deviation(a: float, b: float) -> float:
    """How far apart two figures are, in units of the tolerance's scale."""
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), ATOL / RTOL)


def compare(want: list[dict[str, float]], got: list[dict[str, float]], name: str) -> float:
    """The largest :func:`deviation` of ``got`` from ``want`` (same steps and keys asserted)."""
    assert len(got) == len(want), f"{name}: {len(got)} steps != {len(want)}"
    worst = 0.0
    for i, (w, g) in enumerate(zip(want, got)):
        assert sorted(g) == sorted(w), f"{name} step {i + 1}: keys {sorted(g)} != {sorted(w)}"
        for k in w:
            worst = max(worst, deviation(w[k], g[k]))
    return worst


def first_mismatch(want: list[dict[str, float]], got: list[dict[str, float]]) -> str:
    for i, (w, g) in enumerate(zip(want, got)):
        for k in w:
            if not math.isclose(w[k], g[k], rel_tol=RTOL, abs_tol=ATOL):
                return f"step {i + 1} {k}: recorded {w[k]!r}, got {g[k]!r}"
    return ""


def main() -> None:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deviation", action="store_true", help="compare with the recorded file")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    cases = [n for n in CASES if n not in SKIPPED]
    with tempfile.TemporaryDirectory() as tmp:
        got = {n: run_first_steps(n, Path(tmp), args.threads) for n in cases}
    if args.deviation:
        want = json.loads(FIRST_STEPS.read_text())["cases"]
        worst = {n: compare(want[n], got[n], n) for n in cases}
        for n in cases:
            print(f"{n:28s} {worst[n]:.2e}")
        print(f"largest relative deviation {max(worst.values()):.2e} (tolerance {RTOL:.0e})")
        return
    payload = {"fingerprint": fingerprint(args.threads), "steps": STEPS, "cases": got}
    FIRST_STEPS.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
