"""Property-based: any YAML config or ``--set`` either works or is one ConfigError line."""

from __future__ import annotations

from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from autoloss.cli import main
from autoloss.errors import AutolossError
from autoloss.train.config import RunConfig

KEYS = [f"{section}.{name}" for section, fields in RunConfig().to_dict().items() if isinstance(fields, dict) for name in fields]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=2),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=20))


def _one_line(exc: AutolossError) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text


@given(key=keys, value=values)
def test_set_any_key_and_value(key: str, value: object) -> None:
    cfg = RunConfig()
    try:
        cfg.set(key, value, source="--set")
    except AutolossError as exc:
        _one_line(exc)
        return
    cfg.validate()  # what set() accepted is valid
    RunConfig.from_dict(cfg.to_dict())  # and round-trips


@given(raw=st.dictionaries(st.sampled_from([*RunConfig().to_dict(), "junk"]), values, max_size=4))
def test_from_dict_any_mapping(raw: dict[str, object]) -> None:
    try:
        RunConfig.from_dict(raw)
    except AutolossError as exc:
        _one_line(exc)


@given(text=st.text(max_size=200))
def test_any_yaml_file(tmp_path_factory: object, text: str) -> None:
    path = Path(str(tmp_path_factory.mktemp("cfg"))) / "c.yaml"  # type: ignore[attr-defined]
    path.write_text(text, encoding="utf-8")
    try:
        RunConfig.from_yaml(path)
    except AutolossError as exc:
        _one_line(exc)


def test_set_through_the_command_line_is_one_line(capsys: object, tmp_path: Path) -> None:
    for item in ["model.embed_dim=-4", "nonsense=1", "optim.lr=abc", "train.epochs=1.5", "x"]:
        assert main(["train", "--set", item, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err  # type: ignore[attr-defined]
        assert err.count("\n") == 1, err
    assert yaml  # the YAML loader is the one the config uses
