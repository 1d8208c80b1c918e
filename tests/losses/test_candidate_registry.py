"""The candidate registry: names, parsing, errors, and custom candidates."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from autoloss.errors import ConfigError, RegistryError
from autoloss.losses import (
    binary_ce,
    candidate_losses,
    candidate_names,
    get_candidate,
    register_candidate,
    unregister_candidate,
)


@pytest.fixture
def logcosh() -> Iterator[str]:
    def fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log cosh of the probability error."""
        return torch.log(torch.cosh(torch.sigmoid(logits) - y.to(logits.dtype)))

    register_candidate("logcosh", fn)
    yield "logcosh"
    unregister_candidate("logcosh")


def test_builtin_names() -> None:
    assert candidate_names()[:8] == ["ce", "focal", "kl", "hinge", "mse", "gce", "mae", "tce"]
    assert get_candidate("kl").multiclass is not None


def test_parsing_and_errors() -> None:
    assert candidate_losses(" focal , kl,hinge,ce ", "binary").names == (
        "focal",
        "kl",
        "hinge",
        "ce",
    )
    assert candidate_losses(["ce"], "multiclass").names == ("ce",)
    with pytest.raises(RegistryError, match=r"unknown candidate loss 'huber'.*ce, focal, kl"):
        candidate_losses("ce,huber", "binary")
    for bad in ("", " ", [], "ce,,kl", "ce,"):
        with pytest.raises(ConfigError):
            candidate_losses(bad, "binary")
    with pytest.raises(ConfigError, match="twice"):
        candidate_losses("ce,kl,ce", "binary")
    with pytest.raises(ConfigError, match="task"):
        candidate_losses("ce", "regression")
    with pytest.raises(ConfigError, match="kl_eps"):
        candidate_losses("kl", "binary", kl_eps=1.0)
    with pytest.raises(ConfigError, match="focal_gamma"):
        candidate_losses("focal", "binary", focal_gamma=-1)
    cs = candidate_losses("ce,kl", "binary")
    with pytest.raises(RegistryError, match="not in this set"):
        cs.index("hinge")
    assert not isinstance(RegistryError("x"), ValueError)  # user errors, caught by the CLI


def test_custom_candidate(logcosh: str) -> None:
    assert logcosh in candidate_names()
    assert get_candidate(logcosh).doc == "log cosh of the probability error."
    cs = candidate_losses(f"ce,{logcosh}", "binary")
    s = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    y = torch.tensor([0, 1, 0])
    out = cs(s, y)
    expected = torch.log(torch.cosh(torch.sigmoid(s) - y.float()))
    torch.testing.assert_close(out[:, 1], expected)
    torch.testing.assert_close(out[:, 0], binary_ce(s, y))
    out.sum().backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # binary-only candidate on a multi-class task
    with pytest.raises(ConfigError, match="no multi-class function"):
        candidate_losses(f"ce,{logcosh}", "multiclass")
    # duplicate registration needs overwrite=True
    with pytest.raises(RegistryError, match="already registered"):
        register_candidate(logcosh, binary_ce)
    register_candidate(logcosh, binary_ce, overwrite=True)
    torch.testing.assert_close(candidate_losses(logcosh, "binary")(s, y)[:, 0], binary_ce(s, y))


def test_custom_multiclass_candidate_and_shape_check() -> None:
    def top_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return logits.max(1).values - logits.gather(1, y[:, None]).squeeze(1)

    register_candidate("top_margin", binary_ce, multiclass=top_margin)
    register_candidate("bad_shape", lambda s, y: s.sum())
    try:
        cs = candidate_losses("ce,top_margin", "multiclass")
        s = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
        torch.testing.assert_close(cs(s, torch.tensor([1, 0]))[:, 1], torch.tensor([2.0, 0.0]))
        with pytest.raises(ConfigError, match=r"bad_shape.*shape"):
            candidate_losses("ce,bad_shape", "binary")(torch.zeros(3), torch.zeros(3))
    finally:
        unregister_candidate("top_margin")
        unregister_candidate("bad_shape")
    assert "top_margin" not in candidate_names()


def test_overwriting_a_builtin_and_restoring_it() -> None:
    s = torch.tensor([0.3, -2.0])
    y = torch.tensor([1, 1])
    register_candidate("hinge", lambda a, b: torch.zeros_like(a), overwrite=True)
    try:
        assert float(candidate_losses("hinge", "binary")(s, y).abs().sum()) == 0.0
    finally:
        unregister_candidate("hinge")
    torch.testing.assert_close(
        candidate_losses("hinge", "binary")(s, y)[:, 0], torch.tensor([0.7, 3.0])
    )


def test_register_validation() -> None:
    for bad in ("", "a,b", " ce"):
        with pytest.raises(ConfigError):
            register_candidate(bad, binary_ce)
    with pytest.raises(ConfigError, match="callables"):
        register_candidate("not_fn", "ce")  # type: ignore[arg-type]
    with pytest.raises(RegistryError):
        unregister_candidate("never_registered")
