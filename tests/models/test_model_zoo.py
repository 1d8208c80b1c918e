"""Every registered model: logits shapes, learning a tiny problem, tracing and export."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from autoloss.data.spec import FeatureSpec
from autoloss.models import build_model, model_names

SMALL = {"embed_dim": 8, "mlp": (32, 32)}
# model-specific sizes kept small so that the whole file runs in seconds
SMALL_EXTRA: dict[str, dict[str, object]] = {
    "autoint": {"attention_layers": 2, "attention_dim": 8},
    "xdeepfm": {"cin_layers": (8, 8)},
}
INTERACTING = [n for n in model_names() if n != "lr"]


def small(name: str) -> dict[str, object]:
    return {**SMALL, **SMALL_EXTRA.get(name, {})}


def spec_for(num_classes: int, with_extra: bool) -> FeatureSpec:
    return FeatureSpec(
        cat_names=("a", "b", "c"),
        cat_vocab=(6, 7, 5),
        dense_names=("p", "q") if with_extra else (),
        bag_names=("g",) if with_extra else (),
        bag_vocab=(9,) if with_extra else (),
        num_classes=num_classes,
    )


def batch_for(spec: FeatureSpec, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.stack([torch.randint(0, v, (n,), generator=g) for v in spec.cat_vocab], dim=1)
    dense = torch.randn(n, len(spec.dense_names), generator=g) if spec.dense_names else None
    bags = None
    if spec.bag_names:
        bags = torch.randint(0, spec.bag_vocab[0], (n, len(spec.bag_names), 4), generator=g)
        bags[torch.rand(bags.shape, generator=g) < 0.4] = -1  # padding, some bags empty
    return x, dense, bags


@pytest.mark.parametrize("with_extra", [False, True], ids=["cat", "cat+dense+bags"])
@pytest.mark.parametrize("num_classes", [2, 4])
@pytest.mark.parametrize("name", model_names())
def test_logits_shape(name: str, num_classes: int, with_extra: bool) -> None:
    spec = spec_for(num_classes, with_extra)
    model = build_model(name, spec, **small(name))
    x, dense, bags = batch_for(spec, 10)
    out = model(x, dense, bags)
    assert out.shape == ((10,) if num_classes == 2 else (10, num_classes))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()  # every model's graph reaches its embedding table
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    assert tables and all(t.sparse and t.weight.grad is not None for t in tables)
    model.eval()
    assert model(x[:1], *(t[:1] if t is not None else None for t in (dense, bags))).shape[0] == 1


def optimisers(model: nn.Module, lr: float) -> list[torch.optim.Optimizer]:
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    opts: list[torch.optim.Optimizer] = [torch.optim.SparseAdam(sparse, lr=lr)]
    if dense:
        opts.append(torch.optim.Adam(dense, lr=lr))
    return opts


def interaction_problem(n: int = 1024, seed: int = 0):
    """Label = sign(u[a] + u[b] + 2·V[a, b]): needs the a×b interaction; field c is noise."""
    rng = np.random.default_rng(seed)
    spec = FeatureSpec(cat_names=("a", "b", "c"), cat_vocab=(8, 8, 5))
    x = np.stack([rng.integers(0, v, n) for v in spec.cat_vocab], axis=1)
    u = rng.normal(0, 1, 8)
    v = rng.choice([-1.0, 1.0], size=(8, 8))
    score = u[x[:, 0]] + u[x[:, 1]] + 2 * v[x[:, 0], x[:, 1]]
    return spec, torch.from_numpy(x), torch.from_numpy((score > 0).astype(np.float32))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 0.02):
    opts = optimisers(model, lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(y), (256,), generator=g)
        logits = model(x[idx])
        loss = (
            F.binary_cross_entropy_with_logits(logits, y[idx])
            if logits.dim() == 1
            else F.cross_entropy(logits, y[idx].long())
        )
        for o in opts:
            o.zero_grad()
        (loss + model.regularization()).backward()
        for o in opts:
            o.step()
        losses.append(float(loss.detach()))
    return np.mean(losses[:5]), np.mean(losses[-10:])


@pytest.mark.parametrize("name", model_names())
def test_training_learns_a_tiny_problem(name: str) -> None:
    torch.manual_seed(0)
    spec, x, y = interaction_problem()
    model = build_model(name, spec, dropout=0.0, **small(name))
    first, last = train(model, x, y, steps=60)
    assert last < first - 0.1, (first, last)
    model.eval()
    with torch.no_grad():
        auc = roc_auc_score(y.numpy(), model(x).numpy())
    assert auc > (0.6 if name == "lr" else 0.8), auc  # lr sees only the marginals


def test_multiclass_training_learns() -> None:
    torch.manual_seed(0)
    spec, x, y = interaction_problem()
    y3 = (y + (x[:, 2] >= 3).float()).long()  # 3 classes, also using field c
    spec = FeatureSpec(cat_names=spec.cat_names, cat_vocab=spec.cat_vocab, num_classes=3)
    model = build_model("deepfm", spec, **SMALL)
    first, last = train(model, x, y3.float(), steps=60)
    assert last < first - 0.3, (first, last)


def test_dense_and_bag_fields_are_learnt() -> None:
    """Label = (token 3 in the bag) XOR (dense value > 0): needs both extra inputs."""
    torch.manual_seed(0)
    spec = spec_for(2, with_extra=True)
    x, dense, bags = batch_for(spec, 1024, seed=1)
    assert dense is not None and bags is not None
    y = ((bags == 3).any(dim=2)[:, 0] ^ (dense[:, 0] > 0)).float()
    model = build_model("deepfm", spec, **SMALL)
    opts = optimisers(model, 0.02)
    for step in range(80):
        idx = torch.arange(256) + 256 * (step % 4)
        loss = F.binary_cross_entropy_with_logits(model(x[idx], dense[idx], bags[idx]), y[idx])
        for o in opts:
            o.zero_grad()
        loss.backward()
        for o in opts:
            o.step()
    model.eval()
    with torch.no_grad():
        auc = roc_auc_score(y.numpy(), model(x, dense, bags).numpy())
    assert auc > 0.8, auc


@pytest.mark.parametrize("name", ["deepfm", "fm", "lr"])
def test_regularization(name: str) -> None:
    spec = spec_for(2, with_extra=True)
    x, dense, bags = batch_for(spec, 16)
    plain = build_model(name, spec, **SMALL)
    plain(x, dense, bags)
    assert float(plain.regularization()) == 0.0
    model = build_model(name, spec, embedding_l2=1e-2, **SMALL)
    for m in model.modules():  # make the penalty visible above float noise
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.1)
    model(x, dense, bags)
    reg = model.regularization()
    assert reg.requires_grad and float(reg.detach()) > 0
    reg.backward()
    grads = [m.weight.grad for m in model.modules() if isinstance(m, nn.Embedding)]
    assert all(g is not None and g.coalesce().values().abs().sum() > 0 for g in grads)
    model.eval()
    model(x, dense, bags)
    assert float(model.regularization()) == 0.0  # no penalty at evaluation


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jit is deprecated but still served
@pytest.mark.parametrize("with_extra", [False, True], ids=["cat", "cat+dense+bags"])
def test_deepfm_traces(with_extra: bool) -> None:
    spec = spec_for(2, with_extra)
    model = build_model("deepfm", spec, **SMALL).eval()
    x, dense, bags = batch_for(spec, 8)
    args = tuple(t for t in (x, dense, bags) if t is not None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, args)
    x2, dense2, bags2 = batch_for(spec, 5, seed=3)
    args2 = tuple(t for t in (x2, dense2, bags2) if t is not None)
    torch.testing.assert_close(traced(*args2), model(*args2))
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.jit.load(buf)(*args2), model(*args2))


@pytest.mark.parametrize("name", model_names())
def test_torch_export(name: str) -> None:
    """``torch.export`` (what the ONNX exporter builds on) accepts every model."""
    spec = spec_for(2, with_extra=True)
    model = build_model(name, spec, **small(name)).eval()
    x, dense, bags = batch_for(spec, 6)
    exported = torch.export.export(model, (x, dense, bags))
    torch.testing.assert_close(exported.module()(x, dense, bags), model(x, dense, bags))
