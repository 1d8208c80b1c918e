"""``reweight``: per-example weights with a zero option, learnt by the meta-gradient."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from policy_testkit import assert_same_state, batch, problem, run_cfg, state_copy
from test_policy_gradients import _model, _true_unrolled_objective

from autoloss.cli import main
from autoloss.data.conditions import Conditions, apply_conditions
from autoloss.data.store import open_dataset
from autoloss.errors import CheckpointError
from autoloss.losses import candidate_losses
from autoloss.policies.reweight import OFF, Reweight, normalise
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer, model_regularization

QUIET = lambda _line: None  # noqa: E731


def test_weights_are_non_negative_normalised_and_can_reach_zero() -> None:
    torch.manual_seed(0)
    crit = Reweight("binary", candidates="focal,kl,hinge,ce", hidden=(8,))
    logits, y = torch.randn(64), torch.randint(0, 2, (64,))
    w = crit.probabilities(logits, y)
    assert w.shape == (64, 4) and bool((w >= 0).all())
    assert float(w.sum(1).mean()) == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():  # a controller that switches the positives off
        crit.network.head.bias.fill_(30.0)
        crit.network.head.weight.zero_()
        crit.network.linears[0].weight.zero_()
        crit.network.linears[0].weight[0, 0] = 1.0  # hidden unit 0 = relu(y)
        crit.network.linears[0].bias.zero_()
        crit.network.head.weight[:, 0] = -60.0  # z = 30 - 60·y: off for every positive
    w = crit.probabilities(logits, y)
    assert float(w[y == 1].sum(1).max()) < 1e-9  # zero for every positive
    assert float(w.sum(1).mean()) == pytest.approx(1.0, abs=1e-6)  # the others carry the batch
    assert normalise(torch.zeros(3, 2)).isfinite().all()  # an all-zero batch: no NaN


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_it_starts_as_ce_or_the_uniform_mixture(task: str) -> None:
    torch.manual_seed(1)
    n = None if task == "binary" else 5
    logits = torch.randn(32) if task == "binary" else torch.randn(32, 5)
    y = torch.randint(0, 2 if n is None else 5, (32,))
    ce = candidate_losses("ce", task)(logits, y).mean()
    assert torch.equal(Reweight(task, n, candidates="ce")(logits, y), ce)  # bit for bit
    paper = candidate_losses("focal,kl,hinge,ce", task)(logits, y)
    mixed = Reweight(task, n, candidates="focal,kl,hinge,ce")(logits, y)
    torch.testing.assert_close(mixed, paper.mean(1).mean())


@pytest.mark.parametrize(("impl", "kind"), [("finite-difference", "tiny"), ("autograd", "deepfm")])
def test_unrolled_hypergradient_matches_a_numeric_one(impl: str, kind: str) -> None:
    torch.manual_seed(0)
    xi, step = 0.1, 3
    model = _model(kind)
    policy = Reweight("binary", candidates="ce,focal", xi=xi, unrolled_impl=impl, hidden=(8,))
    policy = policy.double()
    with torch.no_grad():  # away from the all-equal start, where the gradient is special
        for p in policy.parameters():
            p.normal_(0, 0.5)
    tb, vb = batch(48, seed=1), batch(40, seed=2)
    pb = problem(model, policy.candidate_set, tb, vb)
    pb.regularization = model_regularization
    obj, grads = policy.hypergradient(pb)
    assert obj == pytest.approx(
        float(_true_unrolled_objective(policy, model, tb, vb, xi, step)), rel=1e-9
    )
    names = [n for n, _ in policy.named_parameters()]
    params = dict(policy.named_parameters())
    h = 1e-6
    for name, idx in [("network.head.weight", (1, 2)), ("network.head.bias", (0,)),
                      ("network.linears.0.weight", (3, 1))]:  # fmt: skip
        p = params[name]
        with torch.no_grad():
            p[idx] += h
        f_plus = float(_true_unrolled_objective(policy, model, tb, vb, xi, step))
        with torch.no_grad():
            p[idx] -= 2 * h
        f_minus = float(_true_unrolled_objective(policy, model, tb, vb, xi, step))
        with torch.no_grad():
            p[idx] += h
        numeric = (f_plus - f_minus) / (2 * h)
        got = grads[names.index(name)]
        assert got is not None and abs(numeric) > 1e-8, name
        rel = 1e-3 if impl == "finite-difference" else 1e-6
        assert float(got[idx]) == pytest.approx(numeric, rel=rel, abs=1e-10), name


@pytest.mark.parametrize("mode", ["unrolled", "first-order"])
def test_update_leaves_the_model_untouched_and_learns(mode: str) -> None:
    torch.manual_seed(0)
    model = _model("deepfm")
    policy = Reweight("binary", candidates="ce", mode=mode, hidden=(8,)).double()
    tb, vb = batch(48, seed=1), batch(40, seed=2)
    before_model, before_policy = state_copy(model), state_copy(policy)
    for _ in range(3):
        out = policy.update(model, vb.x, vb.y, train_batch=(tb.x, tb.y))
        assert set(out) == {"controller_objective"}
    assert_same_state(model, before_model)
    assert all(p.grad is None for p in model.parameters())
    changed = [k for k, v in state_copy(policy).items() if not torch.equal(v, before_policy[k])]
    assert any(k.startswith("network.head") for k in changed)


def test_meta_split_is_disjoint_seeded_and_ce_meta_trains_on_exactly_those_rows(
    tiny_dataset: Path,
) -> None:
    ds = open_dataset(str(tiny_dataset))
    valid = ds.split("valid")
    cond = Conditions(label_noise=0.3, noise_on_valid=False, meta_fraction=0.4)
    a, b = apply_conditions(ds, cond, seed=5), apply_conditions(ds, cond, seed=5)
    other = apply_conditions(ds, cond, seed=6)
    meta, sel = np.asarray(a.split("meta").x), np.asarray(a.split("valid").x)
    assert len(meta) == round(0.4 * len(valid)) and len(meta) + len(sel) == len(valid)
    assert a.split_names == ("train", "valid", "meta", "test")
    rows = {tuple(r) for r in np.asarray(valid.x)}
    assert {tuple(r) for r in meta} | {tuple(r) for r in sel} == rows  # a partition of valid
    assert np.array_equal(meta, np.asarray(b.split("meta").x))  # seeded
    assert not np.array_equal(meta, np.asarray(other.split("meta").x))  # by the run's seed
    # valid stays clean (noise_on_valid=false); the train noise is unchanged by the split
    assert a.flipped("meta") is None and int(a.flipped("train").sum()) > 0
    control = apply_conditions(ds, Conditions(**{**cond.__dict__, "meta_use": "train"}), seed=5)
    assert control.split_names == ("train", "valid", "test")
    train, plain = control.split("train"), a.split("train")
    n = len(plain)
    assert np.array_equal(np.asarray(train.x)[:n], np.asarray(plain.x))
    assert np.array_equal(np.asarray(train.x)[n:], meta)  # the meta rows, clean labels
    assert np.array_equal(np.asarray(train.y)[n:], np.asarray(a.split("meta").y))
    assert np.array_equal(np.asarray(control.split("valid").x), sel)  # the same selection rows
    assert len(control.flipped("train")) == len(train)
    idx = np.array([n + 3, 2, n, 0])  # batches read across both parts
    assert np.array_equal(np.take(train.x, idx, axis=0), np.asarray(train.x)[idx])


def test_learnt_policies_update_on_meta_and_every_method_selects_on_the_rest(
    tiny_dataset: Path,
) -> None:
    cfg = run_cfg(tiny_dataset, loss__method="reweight", data__meta_fraction=0.5)
    trainer = Trainer(cfg, log=QUIET)
    assert trainer.policy_split == "meta"
    drawn = trainer._valid_stream().next()
    meta_rows = {tuple(r) for r in np.asarray(trainer.dataset.split("meta").x)}
    assert {tuple(r) for r in drawn.x.numpy()} <= meta_rows
    assert (
        Trainer(run_cfg(tiny_dataset, loss__method="reweight"), log=QUIET).policy_split == "valid"
    )


def test_resume_transfer_and_refusals(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = run_cfg(tiny_dataset, loss__method="reweight", train__epochs=2, out=str(tmp_path / "r"))
    _, result = train_run(cfg, log=QUIET)
    assert result["policy"]["controller_updates"] == result["steps"] // 7  # every 7 steps
    saved = torch.load(tmp_path / "r" / "controller.pt", weights_only=True)
    assert saved["method"] == "reweight" and saved["output"] == "magnitude"
    # transfer: loaded frozen, no validation batches drawn
    frozen = run_cfg(
        tiny_dataset,
        loss__method="reweight",
        loss__controller=str(tmp_path / "r" / "controller.pt"),
    )
    trainer = Trainer(frozen, log=QUIET)
    assert trainer.policy.update_every == 0 and not any(
        p.requires_grad for p in trainer.policy.parameters()
    )
    wrong = run_cfg(tiny_dataset, loss__method="reweight", loss__reweight_candidates=["ce", "focal"],
                    loss__controller=str(tmp_path / "r" / "controller.pt"))  # fmt: skip
    with pytest.raises(CheckpointError, match="candidates"):
        Trainer(wrong, log=QUIET)


def test_reweight_is_refused_under_nproc_in_one_line(
    tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", str(tiny_dataset), "--loss", "reweight", "--nproc", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "train it in one process" in err


def test_the_run_logs_how_many_rows_are_switched_off(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = run_cfg(
        tiny_dataset, loss__method="reweight", train__log_every=2, out=str(tmp_path / "r")
    )
    train_run(cfg, log=QUIET)
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    policy: list[dict[str, Any]] = [r for r in records if r["type"] == "policy"]
    assert policy and all(0 <= r["weight_off"] <= 1 for r in policy)
    assert OFF == 0.1


def test_a_run_writes_a_sample_of_its_weights_with_the_flipped_rows(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    from autoloss.train.example_weights import load_example_weights

    cfg = run_cfg(tiny_dataset, loss__method="reweight", data__label_noise=0.3,
                  data__noise_on_valid=False, data__meta_fraction=0.5, out=str(tmp_path / "r"))  # fmt: skip
    train_run(cfg, log=QUIET)
    arrays = load_example_weights(tmp_path / "r" / "example_weights.npz")
    n = len(arrays["label"])
    assert n == 2400 and bool(arrays["knows_flips"])  # the whole (small) train split
    assert 0.2 < float(arrays["flipped"].mean()) < 0.4  # about 30% of them flipped
    names = json.loads((tmp_path / "r" / "result.json").read_text())["candidates"]
    assert arrays["candidate_weights"].shape == (n, len(names))
    assert list(arrays["candidates"]) == names
    assert bool((arrays["weight"] >= 0).all()) and bool(
        ((arrays["prediction"] >= 0) & (arrays["prediction"] <= 1)).all()
    )
    ce_run = run_cfg(tiny_dataset, loss__method="ce", out=str(tmp_path / "c"))
    train_run(ce_run, log=QUIET)
    assert not (tmp_path / "c" / "example_weights.npz").exists()


def test_its_candidates_come_from_their_own_setting(
    tiny_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = Trainer(run_cfg(tiny_dataset, loss__method="reweight"), log=QUIET)
    assert trainer.policy.candidates == ("ce",)  # the frozen default: Meta-Weight-Net
    paper = run_cfg(
        tiny_dataset, loss__method="reweight", loss__reweight_candidates="focal,kl,hinge,ce"
    )
    assert Trainer(paper, log=QUIET).policy.candidates == ("focal", "kl", "hinge", "ce")
    follow = run_cfg(tiny_dataset, loss__method="reweight", loss__reweight_candidates=None,
                     loss__candidates="ce,gce")  # fmt: skip
    assert Trainer(follow, log=QUIET).policy.candidates == ("ce", "gce")
    code = main(
        ["train", "--data", str(tiny_dataset), "--loss", "reweight", "--candidates", "ce,gce"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "loss.reweight_candidates=ce,gce" in err and err.count("\n") == 1
