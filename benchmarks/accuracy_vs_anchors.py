"""Our CE models against FuxiCTR's on the same data splits: test AUC over seeds, Welch p.

Both libraries train the same configuration (embedding 16, MLP 128-128 with BatchNorm and
dropout 0.2, no regularisation, Adam 1e-3, batch 2000, early stopping on validation AUC with
patience 2, best epoch restored), each through its own pipeline: ``autoloss prepare`` +
``autoloss train`` for us; FuxiCTR's feature processor, parquet loader and ``fit`` for it
(``benchmarks/anchors/fuxictr_run.py``, in an environment this script builds under ``--root``).
Criteo-layout data use min count 10 on both sides (the BARS protocol), Frappe min count 1.
FuxiCTR is not deterministic on CPU, so its side runs ``--fuxictr-repeats`` times per seed.
Every run's figures are cached under ``--root/results``: an interrupted benchmark resumes.
``FRAPPE_X1`` is the directory of the Frappe_x1 files (docs/data.md, "Frappe_x1").

    python benchmarks/accuracy_vs_anchors.py --root bench-out/anchors \
        --frappe $FRAPPE_X1 --criteo-rows 300000 --models deepfm,ipnn,dcnv2 \
        --seeds 1,2,3,4,5 --fuxictr-repeats 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
from pathlib import Path

from scipy import stats

from _machine import machine_info  # type: ignore[import-not-found]
from _runs import mean_sd  # type: ignore[import-not-found]
from anchors.common import HERE, anchors_python, criteo_data, frappe_data, log, run_json


def prepare_ours(root: Path, kind: str, data: Path, min_count: int) -> Path:
    """Our encoded dataset of ``data``'s three splits (made once)."""
    out = root / "prepared" / data.name
    if (out / "meta.json").exists():
        return out
    ext = "txt" if kind == "criteo" else "csv"
    files = {s: str(data / f"{s}.{ext}") for s in ("train", "valid", "test")}
    cmd = [sys.executable, "-m", "autoloss.cli", "prepare", "--format", kind]
    cmd += ["--input", files["train"], "--valid", files["valid"], "--test", files["test"]]
    cmd += ["--min-count", str(min_count), "--out", str(out), "--overwrite"]
    subprocess.run(cmd, check=True)
    return out


def cached(path: Path, run: callable) -> dict:  # type: ignore[valid-type]
    if path.exists():
        return json.loads(path.read_text())
    figures = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures))
    return figures


def defaults_digest() -> str:
    """A digest of our default configuration: cached results of ours go stale when it changes."""
    from autoloss.train.config import RunConfig

    text = json.dumps(RunConfig().to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def run_pair(args: argparse.Namespace, ds: dict, model: str, seed: int) -> dict[str, list[dict]]:
    """Our run and FuxiCTR's repeats of one (dataset, model, seed)."""
    res = args.root / "results" / ds["name"]
    ours_cmd = [sys.executable, str(HERE / "ours_run.py"), "--data", str(ds["prepared"])]
    ours_cmd += ["--model", model, "--seed", str(seed), "--epochs", str(ds["epochs"])]
    ours_cmd += ["--threads", str(args.threads), "--out", str(res / f"run-{model}-s{seed}")]
    for s in args.set:
        ours_cmd += ["--set", s]
    tag = "-".join(s.replace("=", "_") for s in args.set) or "defaults"
    tag += "-" + defaults_digest()
    out: dict[str, list[dict]] = {"autoloss": [], "fuxictr": []}
    if "autoloss" in args.libraries:
        path = res / f"autoloss-{tag}-{model}-s{seed}.json"
        out["autoloss"].append(cached(path, lambda: run_json(ours_cmd)))
    fx_cmd = [str(args.python), str(HERE / "fuxictr_run.py"), "--data", str(ds["data"])]
    fx_cmd += ["--kind", ds["kind"], "--model", model, "--seed", str(seed)]
    fx_cmd += ["--epochs", str(ds["epochs"]), "--min-count", str(ds["min_count"])]
    fx_cmd += ["--threads", str(args.threads), "--work", str(args.root / "fuxictr-work")]
    if "fuxictr" in args.libraries:
        out["fuxictr"] = [
            cached(res / f"fuxictr-{model}-s{seed}-r{r}.json", lambda: run_json(fx_cmd))
            for r in range(1, args.fuxictr_repeats + 1)
        ]
    return out


def table(rows: list[tuple[str, str, dict[str, list[dict]]]]) -> str:
    lines = [
        "| dataset | model | autoloss test AUC | FuxiCTR test AUC (all repeats) | per repeat |"
        " Δ (ours − FuxiCTR) | Welch p | autoloss logloss | FuxiCTR logloss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, model, runs in rows:
        if not runs["autoloss"] or not runs["fuxictr"]:
            continue
        ours = [r["test_auc"] for r in runs["autoloss"]]
        fx = [r["test_auc"] for r in runs["fuxictr"]]
        reps = sorted({r["rep"] for r in runs["fuxictr"]})
        per_rep = " / ".join(
            f"{statistics.mean(r['test_auc'] for r in runs['fuxictr'] if r['rep'] == k):.4f}"
            for k in reps
        )
        p = stats.ttest_ind(ours, fx, equal_var=False).pvalue if len(ours) > 1 else float("nan")
        lines.append(
            f"| {dataset} | {model} | {_ms(ours)} | {_ms(fx)} | {per_rep} | "
            f"{statistics.mean(ours) - statistics.mean(fx):+.4f} | {p:.3f} | "
            f"{_ms([r['test_logloss'] for r in runs['autoloss']])} | "
            f"{_ms([r['test_logloss'] for r in runs['fuxictr']])} |"
        )
    return "\n".join(lines)


def _ms(v: list[float]) -> str:
    return f"{mean_sd(v)} (n={len(v)})"


def datasets(args: argparse.Namespace) -> list[dict]:
    out = []
    if args.frappe:
        data = frappe_data(args.root, Path(args.frappe))
        out.append({"name": "frappe_x1", "kind": "frappe", "data": data, "min_count": 1,
                    "epochs": args.frappe_epochs})  # fmt: skip
    if args.criteo_rows:
        data = criteo_data(args.root, args.criteo_rows)
        out.append({"name": data.name, "kind": "criteo", "data": data, "min_count": 10,
                    "epochs": args.criteo_epochs})  # fmt: skip
    for ds in out:
        ds["prepared"] = prepare_ours(args.root, ds["kind"], ds["data"], ds["min_count"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=Path("bench-out/anchors"))
    p.add_argument("--frappe", help="directory of Frappe_x1's train/valid/test.csv.gz")
    p.add_argument("--criteo-rows", type=int, default=300_000, help="0: no Criteo-layout data")
    p.add_argument("--frappe-epochs", type=int, default=15)
    p.add_argument("--criteo-epochs", type=int, default=3)
    p.add_argument("--models", default="deepfm")
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--fuxictr-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads of every run (0: all)")
    p.add_argument("--set", action="append", default=[], help="a setting of our runs")
    p.add_argument("--libraries", default="autoloss,fuxictr", help="the sides to run")
    args = p.parse_args()
    args.root = args.root.resolve()
    print(machine_info())
    args.python = anchors_python(args.root)
    rows = []
    for ds in datasets(args):
        for model in args.models.split(","):
            runs: dict[str, list[dict]] = {"autoloss": [], "fuxictr": []}
            for seed in (int(s) for s in args.seeds.split(",")):
                log(f"{ds['name']} {model} seed {seed}")
                pair = run_pair(args, ds, model, seed)
                runs["autoloss"] += pair["autoloss"]
                for rep, r in enumerate(pair["fuxictr"], start=1):
                    runs["fuxictr"].append({**r, "rep": rep})
            rows.append((ds["name"], model, runs))
    print(f"\nour settings: {' '.join(args.set) or 'defaults'}\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
