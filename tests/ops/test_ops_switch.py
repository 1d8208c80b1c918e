"""The one switch back to PyTorch's ops: names, nesting, the environment variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autoloss import ops
from autoloss.ops import switch


def test_use_reference_switches_at_once_and_restores_in_a_block() -> None:
    assert ops.reference_kernels() == frozenset()
    with ops.use_reference("dropout"):
        assert ops.reference("dropout") and not ops.reference("softmax")
        with ops.use_reference():
            assert ops.reference_kernels() == frozenset(ops.KERNELS)
            with ops.use_reference("softmax", on=False):
                assert not ops.reference("softmax") and ops.reference("pairwise")
        assert ops.reference_kernels() == {"dropout"}
    assert ops.reference_kernels() == frozenset()
    ops.use_reference("pairwise")  # without a block: stays on until switched off
    try:
        assert ops.reference("pairwise")
    finally:
        ops.use_reference(on=False)
    assert ops.reference_kernels() == frozenset()


def test_an_unknown_kernel_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown kernel"):
        ops.use_reference("sotfmax")
    assert ops.reference_kernels() == frozenset()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", set()), ("0", set()), ("1", set(ops.KERNELS)), ("all", set(ops.KERNELS)),
     ("dropout, softmax", {"dropout", "softmax"})],
)  # fmt: skip
def test_the_environment_variable_gives_the_starting_state(value: str, expected: set[str]) -> None:
    assert switch._parse(value) == expected
    with pytest.raises(ValueError, match="unknown kernel"):
        switch._parse("dropout,bogus")


def test_the_environment_variable_is_read_at_import() -> None:
    env = {**os.environ, switch.ENV: "shared_sort"}
    code = "from autoloss import ops; print(sorted(ops.reference_kernels()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['shared_sort']"


def test_every_kernel_has_an_agreement_test() -> None:
    """Each name the switch knows is exercised by one of tests/ops' agreement tests."""
    import test_ops_dropout
    import test_ops_embedding
    import test_ops_interaction
    import test_ops_softmax

    covered = set()
    for module in (test_ops_dropout, test_ops_embedding, test_ops_interaction, test_ops_softmax):
        covered |= set(module.KERNELS_TESTED)
    assert covered == set(ops.KERNELS)
