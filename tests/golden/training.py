"""Golden references of every ``--loss`` method on a fixed tiny dataset (behaviour guard).

``python tests/golden/training.py`` records ``training.json`` beside this file; the test
``tests/test_golden_training.py`` trains the same runs and asserts the figures are unchanged:
test/valid metrics, every logged policy record (candidate probabilities, α, τ, controller
objective) and digests of the saved model and controller tensors. On the CPU capability the
references were recorded on the comparison is exact (bit-identical); on another capability
(other vector kernels) it falls back to a relative tolerance.
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

COMMON = [
    "--model", "deepfm", "--embed-dim", "4", "--mlp", "16,16", "--batch-size", "200",
    "--epochs", "2", "--threads", "1", "--device", "cpu", "--progress", "off",
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

#: Result fields that depend on time or paths, never compared.
VOLATILE = {"train_seconds", "train_rows_per_second", "search_seconds", "autoloss_version"}


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


def main() -> None:
    import tempfile

    names = sys.argv[1:] or list(CASES)
    cases = json.loads(GOLDEN.read_text())["cases"] if GOLDEN.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cases[name] = run_case(name, Path(tmp))
            print(name, cases[name]["result"]["test"], flush=True)
    payload = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "cases": cases,
    }
    GOLDEN.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
