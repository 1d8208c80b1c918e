"""Hostile values, degenerate data and inputs changed under a run (docs/reliability.md, classes
3, 4 and 6 of the second reliability round): one line naming the option or the data, exit 2, or
a warned, defined result; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_reliability import QUIET, _interrupted_run
from test_trainer import small_cfg

from autoloss.cli import main, terminal_safe
from autoloss.data.store import open_dataset
from autoloss.data.synth import write_synthetic_criteo
from autoloss.errors import ConfigError, DataError
from autoloss.models.layers import BatchNorm1d
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from autoloss.yamlfile import MAX_DEPTH
from encoded_fixtures import write_encoded_dataset


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# ------------------------------------------------------------------ class 4: option values
@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--seed", "-1"], "'train.seed' (from --seed) must be in 0..4294967295, got -1"),
        (["--seed", "18446744073709551616"], "'train.seed' (from --seed) must be in 0.."),
        (["--set", "train.epochs=1e308"], "'train.epochs' (from --set) must be at most 2147483647"),
        (["--batch-size", "99999999999"], "'optim.batch_size' (from --batch-size) must be at"),
        (["--set", "data.noise_seed=-5"], "'data.noise_seed' (from --set) must be in 0.."),
    ],
)
def test_numbers_out_of_range_are_one_line(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *option, "--out", str(tmp_path / "r")]) == 2
    err = _one_line_error(capsys, message)
    assert len(err) < 300  # a 309-digit number is not echoed whole
    assert not (tmp_path / "r").exists()


def test_an_embedding_too_large_for_memory_is_one_line(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "r")]
    assert main([*argv, "--embed-dim", "1000000000", "--progress", "off"]) == 2
    _one_line_error(capsys, "'model.embed_dim' = 1000000000", "GiB available")
    assert not (tmp_path / "r").exists()


def test_batch_norm_trains_on_a_single_row_with_its_running_statistics() -> None:
    torch.manual_seed(0)
    bn = BatchNorm1d(4)
    bn(torch.randn(16, 4))  # some running statistics
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    row = torch.randn(1, 4)
    out = bn(row)  # training mode, one row: torch's own layer raises here
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
    bn.eval()
    assert torch.equal(out, bn(row))
    bn.train()
    two = torch.randn(2, 4)
    reference = torch.nn.BatchNorm1d(4)
    reference.load_state_dict(bn.state_dict())
    assert torch.equal(bn(two), reference(two))  # two rows or more: exactly nn.BatchNorm1d


@pytest.mark.parametrize(("batch_size", "max_steps"), [(1, 3), (239, 0)])
def test_batch_size_one_and_a_last_batch_of_one_row_train(
    tmp_path: Path, batch_size: int, max_steps: int
) -> None:
    data = write_encoded_dataset(tmp_path / "d", rows=300, split=(0.8, 0.1, 0.1))  # 240 train
    cfg = small_cfg(  # 239: the last batch of each epoch holds one row
        data, optim__batch_size=batch_size, train__epochs=2, train__max_steps=max_steps
    )
    cfg.out = str(tmp_path / "r")
    _, result = train_run(cfg, log=QUIET)
    assert np.isfinite(result["test"]["logloss"])


# ------------------------------------------------------------------ class 4: degenerate data
def test_an_empty_split_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_encoded_dataset(tmp_path / "d", rows=300, split=(1.0, 0.0, 0.0))
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--progress", "off"]
    assert main(argv) == 2
    _one_line_error(capsys, "the valid split holds 0 row(s)")


def test_fewer_training_rows_than_processes_is_refused(tmp_path: Path) -> None:
    from autoloss.data.store import check_trainable

    data = write_encoded_dataset(tmp_path / "d", rows=30, split=(0.1, 0.5, 0.4))  # 3 train rows
    with pytest.raises(DataError, match="fewer than the 4 processes of --nproc"):
        check_trainable(open_dataset(data), ranks=4)
    assert check_trainable(open_dataset(data), ranks=3) == []


def test_one_class_splits_train_with_warnings(tmp_path: Path) -> None:
    data = write_encoded_dataset(tmp_path / "d", rows=600)
    for split in ("train", "valid", "test"):
        np.save(data / split / "y.npy", np.ones(len(np.load(data / split / "y.npy")), np.int32))
    cfg = small_cfg(data, train__epochs=1, out=str(tmp_path / "r"))
    _, result = train_run(cfg, log=QUIET)
    warned = " ".join(result["warnings"])
    assert "the valid split has one class only (every label 1)" in warned
    assert "train.select_by=logloss" in warned and "the test split has one class only" in warned
    assert np.isnan(result["test"]["auc"]) and np.isfinite(result["test"]["logloss"])


def test_one_row_prepares_with_a_warning_and_does_not_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.txt"
    write_synthetic_criteo(raw, 50, seed=1)
    one = tmp_path / "one.txt"
    one.write_text(raw.read_text().splitlines()[0] + "\n")
    assert (
        main(["prepare", "--format", "criteo", "--input", str(one), "--out", str(tmp_path / "d")])
        == 0
    )
    out = capsys.readouterr().out
    assert "warning: the valid and test split(s) hold no rows" in out
    argv = ["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")]
    assert main([*argv, "--progress", "off"]) == 2
    _one_line_error(capsys, "holds 0 row(s)")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, y: x.__setitem__((5, 0), -3), "values -3..19 in column 0"),
        (lambda x, y: x.__setitem__((7, 2), 10), "outside 0..9"),
        (lambda x, y: y.__setitem__(3, 2), "y.npy"),
    ],
)
def test_ids_outside_their_vocabulary_are_refused(
    tmp_path: Path, change: Any, message: str
) -> None:
    data = write_encoded_dataset(tmp_path / "d", rows=300)
    x, y = np.load(data / "train" / "x.npy"), np.load(data / "train" / "y.npy")
    change(x, y)
    np.save(data / "train" / "x.npy", x)
    np.save(data / "train" / "y.npy", y)
    with pytest.raises(DataError, match="outside") as err:
        open_dataset(data).split("train")
    assert message in str(err.value)


# ------------------------------------------------------------------ class 6: meaningless input
@pytest.mark.parametrize(
    ("split", "message"),
    [
        ("nan:1:1", "--split needs three finite numbers like 8:1:1, got 'nan:1:1'"),
        ("inf:1:1", "three finite numbers"),
        ("1:0:0", "--split 1:0:0 leaves valid and test empty"),
        ("8:1:0", "leaves test empty"),
    ],
)
def test_split_ratios_that_leave_a_split_empty_are_refused(
    split: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.txt"
    write_synthetic_criteo(raw, 50, seed=1)
    argv = ["prepare", "--format", "criteo", "--input", str(raw), "--out", str(tmp_path / "d")]
    assert main([*argv, "--split", split]) == 2
    _one_line_error(capsys, message)
    with pytest.raises(SystemExit) as exited:  # argparse: exit 2 after its one line
        main([*argv, "--seed", "-1"])
    assert exited.value.code == 2
    _one_line_error(capsys, "--seed: must be in 0..4294967295, got -1")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--models", ""], "--models '' names nothing"),
        (["--methods", ","], "--methods ',' names nothing"),
        (["--seeds", "100000"], "--seeds 100000: give 1..10000 seeds"),
        (["--seed", "4294967295", "--seeds", "2"], "goes past the largest seed"),
    ],
)
def test_compare_lists_and_seeds_must_mean_something(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", *option, "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, message)


def _alias_bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train:\n  epochs: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        (
            "x:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 2 * MAX_DEPTH)),
            "nested too deeply",
        ),
        (_alias_bomb() + "loss:\n  candidates: *a8\n", "too large once its aliases are expanded"),
    ],
)
def test_yaml_nested_deep_or_an_alias_bomb_is_one_line(
    text: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_yaml(path)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    _one_line_error(capsys, message)
    schema = tmp_path / "schema.yaml"
    schema.write_text(text)
    data = tmp_path / "data.csv"
    data.write_text("label,a\n1,x\n0,y\n")
    argv = ["prepare", "--format", "csv", "--schema", str(schema), "--input", str(data)]
    assert main([*argv, "--out", str(tmp_path / "d")]) == 2
    _one_line_error(capsys, message)


def test_paths_with_control_characters_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "x\n\x1b[31mred"
    assert main(["train", "--out", str(out)]) == 2
    err = _one_line_error(capsys, "x\\n\\x1b[31mred")
    assert "\x1b" not in err
    assert terminal_safe("tab\there\u200b") == "tab\\there\\u200b"


def test_damaged_lines_of_the_training_log_are_dropped_on_resume_and_in_the_report(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    _interrupted_run(tiny_dataset, out, 30, train__checkpoint_every=4, train__epochs=2)
    log = out / "metrics.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 1
    log.write_bytes(
        lines[0]
        + b"\xff\xfe not utf-8\n"
        + b'{"type": "eval", "step": "x"}\n'
        + b"".join(lines[1:])
    )
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--progress", "off"]) == 0
    assert "warning: " in (captured := capsys.readouterr()).err  # warnings: stderr
    assert "2 damaged line(s) dropped" in captured.err
    for line in log.read_bytes().splitlines():
        json.loads(line)


# ------------------------------------------------------------------ class 3: inputs changed under a run
def test_resume_refuses_a_config_yaml_edited_after_the_checkpoint(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    _interrupted_run(tiny_dataset, out, 11, train__checkpoint_every=4, train__epochs=1)
    original = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(original.replace("lr: 0.003", "lr: 0.5", 1))
    assert main(["train", "--resume", "--out", str(out), "--progress", "off"]) == 2
    _one_line_error(
        capsys, "config.yaml was changed after the checkpoint", "optim.lr: 0.003 -> 0.5"
    )
    (out / "config.yaml").write_text(original)
    assert main(["train", "--resume", "--out", str(out), "--progress", "off"]) == 0


def test_resume_refuses_a_dataset_prepared_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "raw.txt"
    write_synthetic_criteo(raw, 3000, seed=1)
    data = tmp_path / "d"
    assert main(["prepare", "--format", "criteo", "--input", str(raw), "--out", str(data)]) == 0
    out = tmp_path / "r"
    _interrupted_run(data, out, 11, train__checkpoint_every=4, train__epochs=1)
    flipped = tmp_path / "flipped.txt"
    rows = [r.split("\t", 1) for r in raw.read_text().splitlines()]
    flipped.write_text("".join(f"{1 - int(lab)}\t{rest}\n" for lab, rest in rows))
    argv = ["prepare", "--format", "criteo", "--input", str(flipped), "--out", str(data)]
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--progress", "off"]) == 2
    _one_line_error(capsys, f"the dataset {data} is not the one this run started on")


def test_a_checkpoint_records_what_it_computes(tiny_dataset: Path, tmp_path: Path) -> None:
    _interrupted_run(tiny_dataset, tmp_path / "r", 11, train__checkpoint_every=4)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert "lr: 0.003" in state["settings"] and len(state["data_identity"]) == 64
