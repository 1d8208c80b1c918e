"""The public Python API (docs/api.md): AutoLoss, DARTSLoss, SLFLoss and candidate_loss around a
model defined here, in a hand-written loop."""

from __future__ import annotations

import io
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import autoloss

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    """Embedding + BatchNorm + dropout MLP: every kind of state an update could disturb."""

    def __init__(self, vocab: int = 40, out: int = 1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.mlp = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.head(self.mlp(self.emb(x).flatten(1)))
        return o.squeeze(1) if o.shape[1] == 1 else o


def make_data(n: int, classes: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 40, (n, 2), generator=g)
    score = torch.sin(x[:, 0].float()) + torch.cos(x[:, 1].float())
    if classes == 2:
        return x, (torch.rand(n, generator=g) < torch.sigmoid(3 * score)).long()
    return x, torch.bucketize(score, torch.tensor([-1.0, -0.3, 0.3, 1.0])[: classes - 1])


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {
        k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)
    }
    state.update(
        {f"grad:{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    )
    return state


def train(crit: autoloss.LossPolicy, classes: int = 2, steps: int = 120) -> tuple[float, float]:
    torch.manual_seed(0)
    model = Net(out=1 if classes == 2 else classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = make_data(4000, classes)
    xv, yv = make_data(1000, classes, seed=1)
    ce = autoloss.candidate_loss("ce", "binary" if classes == 2 else "multiclass")

    def valid_loss() -> float:
        model.eval()
        with torch.no_grad():
            out = float(ce.eval()(model(xv), yv))
        model.train()
        return out

    before = valid_loss()
    for step in range(steps):
        idx = torch.randint(0, 4000, (200,))
        loss = crit(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if crit.should_update(step):
            v = torch.randint(0, 1000, (200,))
            crit.update(model, xv[v], yv[v], train_batch=(x[idx], y[idx]))
    return before, valid_loss()


@pytest.mark.parametrize(
    "make",
    [
        lambda: autoloss.AutoLoss(task="binary"),
        lambda: autoloss.AutoLoss(task="binary", mode="unrolled", hard=True),
        lambda: autoloss.DARTSLoss(task="binary"),
        lambda: autoloss.SLFLoss(task="binary"),
        lambda: autoloss.candidate_loss("focal", "binary"),
    ],
    ids=["autoloss", "autoloss-unrolled-hard", "darts", "slf", "focal"],
)
def test_training_lowers_the_validation_loss(make) -> None:  # type: ignore[no-untyped-def]
    before, after = train(make())
    assert after < before - 0.05, (before, after)


def test_multiclass_autoloss_trains() -> None:
    crit = autoloss.AutoLoss(task="multiclass", num_classes=4, candidates=("ce", "focal", "kl"))
    before, after = train(crit, classes=4)
    assert after < before - 0.1, (before, after)
    assert crit.controller.in_dim == 8  # [onehot(y), softmax] for 4 classes, known at build time


@pytest.mark.parametrize("mode", ["first-order", "unrolled"])
@pytest.mark.parametrize("impl", ["finite-difference", "autograd"])
def test_update_changes_the_controller_and_nothing_of_the_model(mode: str, impl: str) -> None:
    if mode == "first-order" and impl == "autograd":
        pytest.skip("the implementation choice applies to the unrolled mode")
    torch.manual_seed(0)
    model = Net()
    x, y = make_data(64)
    crit = autoloss.AutoLoss(task="binary", mode=mode, unrolled_impl=impl)
    crit(model(x), y).backward()  # the model has .grad, as in a real loop
    model_before, crit_before = snapshot(model), snapshot(crit)
    out = crit.update(model, x[:32], y[:32], train_batch=(x, y))
    assert set(out) == {"controller_objective"}
    after = snapshot(model)
    assert model_before.keys() == after.keys()
    for k in after:
        assert torch.equal(model_before[k], after[k]), k
    assert model.training
    changed = [k for k, v in snapshot(crit).items() if not torch.equal(v, crit_before[k])]
    assert any(k.startswith("selector.network.") and "weight" in k for k in changed), changed


def test_unrolled_needs_the_train_batch() -> None:
    model = Net()
    x, y = make_data(16)
    crit = autoloss.AutoLoss(task="binary", mode="unrolled")
    crit(model(x), y)
    with pytest.raises(ValueError, match="train_batch"):
        crit.update(model, x, y)


def test_state_dict_round_trip_with_weights_only() -> None:
    a = autoloss.AutoLoss(task="multiclass", num_classes=3)
    model = Net(out=3)
    x, y = make_data(64, classes=3)
    for step in range(14):
        a(model(x), y)
        if a.should_update(step):
            a.update(model, x, y)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = autoloss.AutoLoss(task="multiclass", num_classes=3)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b.num_steps == a.num_steps == 14 and b.updates == a.updates == 2
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        if isinstance(va, torch.Tensor):
            assert ka == kb and torch.equal(va, vb)
    # the optimiser's moments came along: the next update is the same on both
    torch.manual_seed(5)
    a.update(model, x, y)
    torch.manual_seed(5)
    b.update(model, x, y)
    assert torch.equal(a.controller.head.weight, b.controller.head.weight)


def test_probabilities_and_candidates() -> None:
    crit = autoloss.AutoLoss(task="binary", candidates="ce,focal")
    assert crit.candidates == ("ce", "focal")
    p = crit.probabilities(torch.tensor([0.3, -2.0, 4.0]), torch.tensor([1, 0, 1]))
    assert p.shape == (3, 2) and torch.allclose(p.sum(1), torch.ones(3))
    assert crit.num_steps == 0  # inspection is not a training step


def test_loss_is_the_weighted_mean_of_the_candidates() -> None:
    crit = autoloss.AutoLoss(task="binary")
    logits, y = torch.randn(50), torch.randint(0, 2, (50,))
    torch.manual_seed(3)
    loss = crit(logits, y)
    torch.manual_seed(3)
    w = crit.weights(logits, y, crit.candidate_set(logits, y), 0)
    expected = (w * autoloss.candidate_losses(crit.candidates, "binary")(logits, y)).sum(1).mean()
    assert torch.equal(loss, expected)


def test_model_inputs_as_tuple_or_dict() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.stack([a, b], 1)).squeeze(1)

    model, a, b, y = Pair(), torch.randn(20), torch.randn(20), torch.randint(0, 2, (20,))
    crit = autoloss.DARTSLoss(task="binary", mode="unrolled")
    crit(model(a, b), y)
    before = crit.beta.clone()
    crit.update(model, (a, b), y, train_batch=((a, b), y))
    crit.update(model, {"a": a, "b": b}, y, train_batch=({"a": a, "b": b}, y))
    assert not torch.equal(before, crit.beta)


def test_import_autoloss_does_not_import_torch() -> None:
    code = "import sys, autoloss; assert 'torch' not in sys.modules; autoloss.AutoLoss"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize("example", ["own_model.py", "pytorch_fm_style.py"])
def test_docs_examples_run_and_are_quoted_verbatim(example: str, capsys) -> None:  # type: ignore[no-untyped-def]
    path = ROOT / "docs" / "examples" / example
    assert path.read_text(encoding="utf-8") in (ROOT / "docs" / "api.md").read_text(
        encoding="utf-8"
    )
    runpy.run_path(str(path), run_name="__main__")
    assert "validation logloss" in capsys.readouterr().out
