"""``autoloss compare --plan FILE``: an experiment plan (YAML) is the same grids as the command
lines it stands for; a bad plan, or a grid option given beside it, is one line, exit 2; the
plan files of benchmarks/grids/ parse."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from autoloss.cli import build_parser, main
from autoloss.commands.experiments import experiment_from_args, plan_experiments
from autoloss.experiments.compare import Experiment

ROOT = Path(__file__).resolve().parents[2]
TINY = {"epochs": 1, "max-steps": 2, "batch-size": 256, "embed-dim": 4, "mlp": 8, "threads": 1}


def from_command_line(argv: list[str]) -> Experiment:
    args = build_parser().parse_args(["compare", *argv])
    assert isinstance(args, argparse.Namespace)
    return experiment_from_args(args)


def same(a: Experiment, b: Experiment) -> None:
    da, db = a.to_dict(), b.to_dict()
    assert da == db
    assert a.out == b.out


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


PLAN = """
description: two conditions x two grids
datasets:
  tiny: {path: DATA}
defaults:
  data: tiny
  models: deepfm
  seeds: 2
  epochs: 1
  threads: 1
  jobs: 2
  set: {train.log_every: 20, data.meta_fraction: 0.5}
conditions:
  clean: {}
  sym30: {set: {data.label_noise: 0.3, data.noise_mode: symmetric, data.noise_on_valid: false}}
experiments:
  methods: {methods: [ce, gce, uniform]}
  robust:
    methods: autoloss
    set: {loss.candidates: [focal, kl, hinge, ce, gce], loss.mode: unrolled}
    grid: {loss.update_every: [7, 14]}
    conditions: [sym30]
"""


def test_a_plan_is_the_grids_of_its_command_lines(tiny_dataset: Path, tmp_path: Path) -> None:
    plan = write(tmp_path, PLAN.replace("DATA", str(tiny_dataset)))
    out = tmp_path / "exp"
    grids = plan_experiments(plan, out)
    assert [e.out.name for _, e in grids] == ["clean-methods", "sym30-methods", "sym30-robust"]
    common = ["--data", str(tiny_dataset), "--models", "deepfm", "--seeds", "2", "--epochs", "1"]
    common += ["--threads", "1", "--set", "train.log_every=20", "--set", "data.meta_fraction=0.5"]
    sym30 = ["--set", "data.label_noise=0.3", "--set", "data.noise_mode=symmetric"]
    sym30 += ["--set", "data.noise_on_valid=false"]
    expected = [
        [*common, "--methods", "ce,gce,uniform", "--out", str(out / "clean-methods")],
        [*common, *sym30, "--methods", "ce,gce,uniform", "--out", str(out / "sym30-methods")],
        [*common, *sym30, "--methods", "autoloss", "--set",
         "loss.candidates=focal,kl,hinge,ce,gce", "--set", "loss.mode=unrolled",
         "--grid", "loss.update_every=7,14", "--out", str(out / "sym30-robust")],
    ]  # fmt: skip
    for (ns, exp), argv in zip(grids, expected, strict=True):
        same(exp, from_command_line(argv))
        assert ns.jobs == 2
    assert grids[2][1].grid == [("loss.update_every", [7, 14])]
    # --dataset moves a dataset; --only keeps grids or conditions
    moved = plan_experiments(
        plan, out, datasets={"tiny": str(tmp_path / "elsewhere")}, only=["clean"]
    )
    assert [e.out.name for _, e in moved] == ["clean-methods"]
    assert moved[0][1].base.data.path == str(tmp_path / "elsewhere")


def test_later_parts_of_a_plan_replace_earlier_ones(tiny_dataset: Path, tmp_path: Path) -> None:
    plan = write(tmp_path, f"""
defaults: {{data: {tiny_dataset}, models: deepfm, methods: ce, seeds: 1, set: {{optim.lr: 0.01}}}}
conditions:
  a: {{methods: [ce, gce], set: {{optim.lr: 0.02}}}}
experiments:
  one: {{}}
  two: {{methods: uniform, set: {{optim.lr: 0.03}}}}
""")  # fmt: skip
    (_, one), (_, two) = plan_experiments(plan, tmp_path / "o")
    assert (one.methods, one.base.optim.lr) == (["ce", "gce"], 0.02)
    assert (two.methods, two.base.optim.lr) == (["uniform"], 0.03)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("experiments: [", ["not valid YAML"]),
        ("- a\n- b\n", ["expected a mapping"]),
        ("defaults: {}\n", ["names no grid"]),
        ("experimnts: {a: {}}\n", ["unknown plan key experimnts"]),
        ("experiments: {a: {methods: ce, nope: 1}}\n", ["unrecognized arguments", "--nope"]),
        ("experiments: {a: {out: x}}\n", ["experiments.a.out", "command line"]),
        ("experiments: {a: {model: deepfm}}\n", ["experiments.a.model", "models"]),
        ("experiments: {a: {seeds: many}}\n", ["--seeds", "many"]),
        ("experiments: {a: {methods: ce, set: {nope.key: 1}}}\n", ["grid a", "nope.key"]),
        ("experiments: {a: {conditions: [b]}}\n", ["no condition b"]),
        ("datasets: {d: {path: x, prepare: y}}\nexperiments: {a: {}}\n", ["datasets.d"]),
        ("experiments: {../a: {}}\n", ["'../a'"]),
    ],
)
def test_a_bad_plan_is_one_line_and_writes_nothing(
    text: str, words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write(tmp_path, text)
    out = tmp_path / "exp"
    assert main(["compare", "--plan", str(plan), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoloss compare: error:"), err
    assert all(w in err for w in words), err
    assert not out.exists()


def test_options_beside_a_plan(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write(tmp_path, PLAN.replace("DATA", str(tiny_dataset)))
    out = tmp_path / "exp"
    base = ["compare", "--plan", str(plan), "--out", str(out)]
    for extra, words in [
        (["--methods", "ce"], ["--methods with --plan"]),
        (["--epochs", "3", "--set", "optim.lr=0.1"], ["--epochs", "--set"]),
        (["--dataset", "nope=/x"], ["--dataset nope"]),
        (["--dataset", "tiny"], ["NAME=PATH"]),
        (["--only", "nope"], ["--only nope"]),
    ]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not out.exists()
    assert main(["compare", "--only", "a", "--out", str(out), "--methods", "ce"]) == 2
    assert "--dataset and --only go with --plan" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_plan_trains_its_grids(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = "".join(f"  {k}: {v}\n" for k, v in TINY.items())
    plan = write(tmp_path, f"""
defaults:
  data: {tiny_dataset}
  models: deepfm
  seeds: 1
{options}conditions:
  clean: {{}}
  noisy: {{set: {{data.label_noise: 0.2}}}}
experiments:
  methods: {{methods: [ce]}}
""")  # fmt: skip
    out = tmp_path / "exp"
    assert main(["compare", "--plan", str(plan), "--out", str(out), "--jobs", "1"]) == 0
    for name in ("clean-methods", "noisy-methods"):
        assert (out / name / "runs" / "deepfm-ce-s2021" / "result.json").is_file()
        assert (out / name / "table.md").is_file()
    assert "== grid noisy-methods" in capsys.readouterr().out


@pytest.mark.parametrize("plan", sorted((ROOT / "benchmarks" / "grids").glob("*.yaml")), ids=str)
def test_the_plan_files_of_the_benchmarks_parse(plan: Path, tmp_path: Path) -> None:
    grids = plan_experiments(plan, tmp_path / "exp")
    assert grids and len({e.out for _, e in grids}) == len(grids)
    for _, exp in grids:
        assert exp.out.parent == tmp_path / "exp" and exp.models and exp.methods
