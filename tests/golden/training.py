"""Golden references of every ``--loss`` method on a fixed tiny dataset (behaviour guard).

``python tests/golden/training.py [--out PATH] [--base REV] [CASE ...]`` trains the runs and
records their figures: test/valid metrics, every logged policy record (candidate probabilities,
α, τ, controller objective) and digests of the saved model and controller tensors, with the
fingerprint of the machine (tests/golden/fingerprint.py). ``tests/test_golden_training.py``
trains them again and asserts every figure is bit-identical, where the fingerprint matches
exactly; elsewhere it is skipped (a whole training's last bits differ between CPUs).
``make golden`` records with the committed code (``--base HEAD``) into ``.golden/`` and compares
the working tree against it, bit for bit, on this machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "training.json"
sys.path.insert(0, str(HERE.parent))

from encoded_fixtures import write_encoded_dataset  # noqa: E402
from golden.fingerprint import fingerprint  # noqa: E402

#: Torch threads of every case (a part of the fingerprint).
THREADS = 1

COMMON = [
    "--model", "deepfm", "--embed-dim", "4", "--mlp", "16,16", "--batch-size", "200",
    "--epochs", "2", "--threads", str(THREADS), "--device", "cpu", "--progress", "off",
    "--set", "train.log_every=3", "--set", "data.eval_batch_size=500",
]  # fmt: skip

#: name -> (task, extra command-line options)
CASES: dict[str, tuple[str, list[str]]] = {
    "ce": ("binary", ["--loss", "ce"]),
    "focal": ("binary", ["--loss", "focal"]),
    "kl": ("binary", ["--loss", "kl"]),
    "hinge": ("binary", ["--loss", "hinge"]),
    "mse": ("binary", ["--loss", "mse"]),
    "uniform": ("binary", ["--loss", "uniform"]),
    "weights": ("binary", ["--loss", "weights:1,2,0,1"]),
    "search": ("binary", ["--loss", "search", "--search-trials", "3", "--set", "loss.search_rows=800"]),
    "darts": ("binary", ["--loss", "darts"]),
    "darts-unrolled": ("binary", ["--loss", "darts", "--mode", "unrolled"]),
    "slf": ("binary", ["--loss", "slf"]),
    "autoloss-soft": ("binary", ["--loss", "autoloss-soft"]),
    "autoloss": ("binary", ["--loss", "autoloss"]),
    "autoloss-hard": ("binary", ["--loss", "autoloss", "--hard"]),
    "autoloss-unrolled": ("binary", ["--loss", "autoloss", "--mode", "unrolled"]),
    "autoloss-unrolled-autograd": (
        "binary", ["--loss", "autoloss", "--mode", "unrolled", "--set", "loss.unrolled_impl=autograd"],
    ),
    "mc-ce": ("multiclass", ["--loss", "ce"]),
    "mc-uniform": ("multiclass", ["--loss", "uniform"]),
    "mc-darts": ("multiclass", ["--loss", "darts"]),
    "mc-autoloss": ("multiclass", ["--loss", "autoloss"]),
    "mc-slf": ("multiclass", ["--loss", "slf"]),
}  # fmt: skip

#: Result fields that depend on time or paths, never compared; and result.json's ``format`` (the
#: version of its layout, not a figure of the training: references recorded before it existed
#: compare with runs that write it).
VOLATILE = {
    "train_seconds",
    "train_rows_per_second",
    "search_seconds",
    "autoloss_version",
    "format",
}


def tensor_digest(state: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in sorted(state.items()):
        if isinstance(v, torch.Tensor):
            out[k] = hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[
                :16
            ]
    return out


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def run_case(name: str, root: Path) -> dict[str, Any]:
    """Train case ``name`` with the CLI into ``root`` and return its comparable figures."""
    from autoloss.cli import main

    task, extra = CASES[name]
    data = root / f"data-{task}"
    if not data.exists():
        write_encoded_dataset(data, num_classes=2 if task == "binary" else 5)
    out = root / name
    code = main(["train", "--data", str(data), "--out", str(out), *COMMON, *extra])
    assert code == 0, f"{name}: exit {code}"
    result = json.loads((out / "result.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    policy = [r for r in records if r.get("type") == "policy"]
    evals = [
        {k: v for k, v in r.items() if k != "train_seconds"}
        for r in records
        if r.get("type") == "eval"
    ]
    model = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    ctrl_path = out / "controller.pt"
    ctrl = (
        tensor_digest(torch.load(ctrl_path, map_location="cpu", weights_only=True)["state_dict"])
        if ctrl_path.exists()
        else None
    )
    return {
        "result": _strip(result),
        "policy_records": policy,
        "eval_records": evals,
        "model": tensor_digest(model),
        "controller": ctrl,
    }


def record(out: Path, names: list[str]) -> None:
    """Train ``names`` with the code this process imports and write them into ``out`` (other
    cases recorded there before are kept where the fingerprint is the same)."""
    import tempfile

    here = fingerprint(THREADS)
    old = json.loads(out.read_text()) if out.exists() else {}
    cases = old.get("cases", {}) if old.get("fingerprint") == here else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cases[name] = run_case(name, Path(tmp))
            print(name, cases[name]["result"]["test"], flush=True)
    payload = {"fingerprint": here, "cases": cases}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    tmp_out.replace(out)


def record_at(rev: str, out: Path, names: list[str]) -> None:
    """:func:`record` with the package as committed at git revision ``rev`` (a temporary
    worktree put first on ``PYTHONPATH``): the reference a refactoring is compared against."""
    import os
    import subprocess
    import tempfile

    repo = HERE.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--quiet", "--detach", str(tree), rev],
            check=True,
        )
        try:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(tree / "src"), str(HERE.parent)]),
            }
            code = f"import autoloss; assert autoloss.__file__.startswith({str(tree)!r})"
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
            cmd = [sys.executable, __file__, "--out", str(out.resolve()), *names]
            subprocess.run(cmd, check=True, env=env)
        finally:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False
            )


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="record golden training references")
    p.add_argument("cases", nargs="*", help=f"cases to record (default all: {', '.join(CASES)})")
    p.add_argument("--out", type=Path, default=GOLDEN, help="where (default: the tracked file)")
    p.add_argument("--base", metavar="REV", help="record with the code of git revision REV")
    args = p.parse_args()
    unknown = [n for n in args.cases if n not in CASES]
    if unknown:
        p.error(f"unknown cases: {', '.join(unknown)}")
    names = args.cases or list(CASES)
    if args.base:
        record_at(args.base, args.out, names)
    else:
        record(args.out, names)


if __name__ == "__main__":
    main()
