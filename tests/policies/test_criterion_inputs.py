"""The public criteria check their inputs like the command line does: one ``ValueError`` naming
the argument, never a NaN returned silently or an index error from deep inside."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import autoloss
from autoloss.losses import candidate_losses

B = 6

CRITERIA: dict[str, Callable[[str], Any]] = {
    "AutoLoss": lambda task: autoloss.AutoLoss(task=task, num_classes=_classes(task)),
    "AutoLoss-soft": lambda task: autoloss.AutoLoss(
        task=task, num_classes=_classes(task), gumbel=False
    ),
    "DARTSLoss": lambda task: autoloss.DARTSLoss(task=task),
    "SLFLoss": lambda task: autoloss.SLFLoss(task=task, num_classes=_classes(task)),
    "candidate_loss(ce)": lambda task: autoloss.candidate_loss("ce", task),
    "candidate_loss(focal)": lambda task: autoloss.candidate_loss("focal", task),
    "CandidateSet": lambda task: candidate_losses("focal,kl,hinge,ce,gce,mae,tce", task),
}

#: Criteria built without a class count: their width is the logits'.
UNSIZED = ("DARTSLoss", "candidate_loss(ce)", "candidate_loss(focal)", "CandidateSet")


def _classes(task: str) -> int | None:
    return None if task == "binary" else 5


def _logits(task: str, rows: int = B) -> torch.Tensor:
    return torch.randn(rows) if task == "binary" else torch.randn(rows, 5)


def _labels(task: str, rows: int = B) -> torch.Tensor:
    return torch.randint(0, 2 if task == "binary" else 5, (rows,))


BAD: dict[str, tuple[Callable[[str], tuple[Any, Any]], str]] = {
    "label above the classes": (
        lambda t: (_logits(t), torch.full((B,), 2 if t == "binary" else 5)),
        r"^y: label (2|5) outside (\{0, 1\}|0\.\.4)$",
    ),
    "negative label": (lambda t: (_logits(t), torch.full((B,), -1)), r"^y: label -1 outside"),
    "NaN label": (
        lambda t: (_logits(t), torch.full((B,), float("nan"))),
        r"^y: (label nan outside|dtype torch.float32; class ids must be integers)",
    ),
    "logits of the wrong width": (
        lambda t: (torch.randn(B, 3), _labels(t)),
        r"^logits: shape \(6, 3\);",
    ),
    "integer logits": (
        lambda t: (_logits(t).long(), _labels(t)),
        r"^logits: dtype torch.int64; expected floating-point",
    ),
    "a batch of zero rows": (
        lambda t: (_logits(t, 0), _labels(t, 0)),
        r"^logits: a batch of zero rows$",
    ),
    "fewer labels than rows": (
        lambda t: (_logits(t), _labels(t, 3)),
        r"^y: shape \(3,\); expected \(6,\)",
    ),
    "labels as a list": (
        lambda t: (_logits(t), [0] * B),
        r"^y: expected a torch tensor of labels, got list$",
    ),
}


@pytest.mark.parametrize("task", ["binary", "multiclass"])
@pytest.mark.parametrize("criterion", list(CRITERIA))
@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_are_one_value_error_naming_the_argument(
    criterion: str, case: str, task: str
) -> None:
    crit = CRITERIA[criterion](task)
    make, message = BAD[case]
    if case == "logits of the wrong width" and task == "multiclass" and criterion in UNSIZED:
        message = r"^y: label [34] outside 0\.\.2$"  # 3 columns: 3 classes, and labels up to 4
    logits, y = make(task)
    with pytest.raises(ValueError, match=message):
        crit(logits, y)


@pytest.mark.parametrize("criterion", ["AutoLoss", "DARTSLoss"])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_bad_validation_label_is_named_by_update(criterion: str, task: str) -> None:
    crit = CRITERIA[criterion](task)
    model = nn.Linear(3, 1 if task == "binary" else 5)
    head: Callable[[torch.Tensor], torch.Tensor] = (
        (lambda x: model(x).squeeze(-1)) if task == "binary" else model
    )
    wrapped = _Module(head, model)
    # (a criterion without a class count sees the width in the validation logits: "y: ...")
    name = "y" if task == "multiclass" and criterion in UNSIZED else "y_valid"
    with pytest.raises(ValueError, match=rf"^{name}: label 9 outside"):
        crit.update(wrapped, torch.randn(4, 3), torch.tensor([0, 1, 9, 0]))


class _Module(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], inner: nn.Module) -> None:
        super().__init__()
        self.fn, self.inner = fn, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@pytest.mark.parametrize("y", [[0.0, 1.0, 1.0], [False, True, True], [0, 1, 1]])
def test_binary_labels_may_be_float_bool_or_integer(y: list[Any]) -> None:
    logits = torch.tensor([0.3, -1.0, 2.0])
    ce = autoloss.candidate_loss("ce", "binary")
    want = nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 1.0]))
    torch.testing.assert_close(ce(logits, torch.tensor(y)), want)
