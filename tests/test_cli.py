"""The command line as a user first meets it: help texts, evaluate's output, compare's options."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from autoloss.cli import build_parser, main
from autoloss.train.config import RunConfig
from autoloss.train.run import train_run


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _helps() -> dict[str, str]:
    parser = build_parser()
    helps = {"autoloss": parser.format_help()}
    helps.update({name: p.format_help() for name, p in _subparsers(parser).items()})
    return helps


def test_help_is_plain_text_with_readable_placeholders() -> None:
    helps = _helps()
    assert {"train", "evaluate", "predict", "export", "compare", "report"} <= set(helps)
    for name, text in helps.items():
        assert "``" not in text, name  # no reStructuredText markup
        assert ":class:" not in text and ":func:" not in text, name
        # placeholders of the training flags are words, not internal names (DATA__PATH)
        assert not re.search(r"[A-Z]+__[A-Z]+", text), (name, re.findall(r"\S*__\S*", text))
    top = helps["autoloss"]
    assert top.splitlines()[2].startswith("Train recommender models")
    train = helps["train"]
    for flag, metavar in (("--data", "PATH"), ("--loss", "METHOD"), ("--epochs", "N")):
        assert f"{flag} {metavar}" in train
    assert "--lr LR" in train and "--set KEY=VALUE" in train


def test_every_command_has_a_description_and_a_one_line_help() -> None:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    listed = {a.dest: a.help for a in action._choices_actions}
    for name, sub in _subparsers(parser).items():
        assert sub.description, name
        assert listed.get(name) and "\n" not in str(listed[name]), name


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from encoded_fixtures import write_encoded_dataset

    tmp = tmp_path_factory.mktemp("cli")
    data = write_encoded_dataset(tmp / "data")
    cfg = RunConfig()
    cfg.data.path = str(data)
    for k, v in {"loss.method": "ce", "train.epochs": 1, "optim.batch_size": 500,
                 "model.embed_dim": 4, "model.mlp": [8], "train.progress": "off",
                 "train.device": "cpu"}.items():  # fmt: skip
        cfg.set(k, v)
    cfg.out = str(tmp / "run")
    run_dir, _ = train_run(cfg, log=lambda s: None)
    return run_dir


def test_evaluate_prints_an_aligned_table_and_json_on_request(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = json.loads((trained_run / "result.json").read_text())
    assert main(["evaluate", "--run", str(trained_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split() == ["split", "rows", "AUC", "logloss"]
    split, rows, auc, logloss = lines[1].split()
    assert split == "test" and int(rows.replace(",", "")) > 0
    assert auc == f"{result['test']['auc']:.4f}" and logloss == f"{result['test']['logloss']:.4f}"
    assert len(lines[0]) == len(lines[1])  # aligned: numbers right-aligned under their header
    assert lines[0].index("logloss") + len("logloss") == len(lines[1])

    assert main(["evaluate", "--run", str(trained_run), "--split", "valid", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "valid" and out["rows"] > 0
    assert out["auc"] == pytest.approx(result["valid"]["auc"], abs=1e-12)  # full precision


@pytest.mark.parametrize(
    ("argv", "instead"),
    [
        (["--model", "deepfm"], "--models"),
        (["--loss", "ce"], "--methods"),
        (["--models", "deepfm", "--model", "ipnn"], "--models"),
        (["--set", "loss.method=ce"], "--methods"),
    ],
)
def test_compare_refuses_model_and_loss_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], instead: str
) -> None:
    out = tmp_path / "exp"
    assert main(["compare", *argv, "--out", str(out), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoloss compare: error:")
    assert instead in err
    assert not out.exists()


def test_compare_help_offers_one_way_to_name_models_and_methods() -> None:
    text = _helps()["compare"]
    listed = set(re.findall(r"\[(--[\w-]+)", text)) | set(
        re.findall(r"^ {2}(--[\w-]+)", text, re.M)
    )
    assert {"--models", "--methods", "--seeds", "--epochs"} <= listed
    assert not {"--model", "--loss"} & listed


def test_an_allocation_failure_anywhere_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """PyTorch's allocator failing mid-run (``ulimit -v``, a full machine): one line, exit 2."""
    import autoloss.commands.train as train_cmd

    def starved(args: object) -> int:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 512000064 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(train_cmd, "cmd_train", starved)
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autoloss train: error: out of memory (488.3 MiB at once)")
    assert len(err.splitlines()) == 1

    def bug(args: object) -> int:
        raise RuntimeError("a bug, not memory")

    monkeypatch.setattr(train_cmd, "cmd_train", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--out", str(tmp_path / "r")])
