"""Examples of settings in the help texts and README.md are real keys of RunConfig."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from autoloss.cli import build_parser
from autoloss.commands.train import set_example
from autoloss.train.config import RunConfig

README = Path(__file__).resolve().parents[2] / "README.md"
# --set KEY=VALUE (help texts wrap lines anywhere there is a space)
SET_EXAMPLE = re.compile(r"--set\s+([a-z][\w.]*)=([^\s`'\",)]+)")
LIST_SETTINGS = {"loss.candidates", "model.mlp", "loss.controller_hidden", "loss.controller_inputs"}
GRID_EXAMPLE = re.compile(r"--grid\s+'?([a-z][\w.]*)=([^\s`'\")]+)")


def _help(command: str) -> str:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command].format_help()


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in d.items():
        if isinstance(v, dict) and v:
            keys |= _flat_keys(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def _check(key: str, value: str) -> None:
    cfg = RunConfig()
    cfg.set(key, value)  # raises ConfigError for an unknown key or a bad value
    section = key.split(".")[0]
    assert section in RunConfig().to_dict(), key


def test_set_example_is_a_real_setting_taken_from_the_config() -> None:
    key, value = set_example().split("=", 1)
    assert key in _flat_keys(RunConfig().to_dict())
    _check(key, value)
    assert f"--set {set_example()}" in " ".join(_help("train").split())


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_setting_in_the_help_is_valid(command: str) -> None:
    text = _help(command)
    examples = SET_EXAMPLE.findall(text)
    assert examples, f"no --set example in autoloss {command} --help"
    for key, value in examples:
        _check(key, value)
    for key, values in GRID_EXAMPLE.findall(text):
        for value in values.split(";"):  # list settings: values separated by ';'
            _check(key, value if key in LIST_SETTINGS else value.split(",")[0])


def test_every_setting_in_the_readme_is_valid() -> None:
    examples = SET_EXAMPLE.findall(README.read_text(encoding="utf-8"))
    assert len(examples) >= 2
    for key, value in examples:
        _check(key, value)
