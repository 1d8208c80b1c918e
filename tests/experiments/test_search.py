"""``--loss search``: the outer loop that picks fixed candidate weights, then trains with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autoloss.errors import ConfigError
from autoloss.train.config import RunConfig
from autoloss.train.search import simplex_weights, train_searched
from autoloss.train.trainer import Trainer

QUIET: Any = lambda s: None  # noqa: E731
NAMES = ("focal", "kl", "hinge", "ce")


def small_cfg(data: Path, **over: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.path = str(data)
    cfg.model.name = "deepfm"
    cfg.model.embed_dim = 8
    cfg.model.mlp = [16, 16]
    cfg.loss.method = "search"
    cfg.optim.batch_size = 128
    cfg.optim.lr = 3e-3
    cfg.train.epochs = 1
    cfg.train.progress = "off"
    cfg.train.device = "cpu"
    for k, v in over.items():
        cfg.set(k.replace("__", "."), v)
    return cfg


def test_simplex_weights() -> None:
    w = simplex_weights([0.5, 0.25, 1.0, 1e-4])
    assert sum(w) == pytest.approx(1.0) and w[2] == 0.0 and min(w) >= 0
    assert w[0] == pytest.approx(0.5 * w[1])  # -ln 0.5 = ½ · (-ln 0.25)
    assert simplex_weights([1.0, 1.0]) == [0.5, 0.5]
    assert simplex_weights([1e-9, 1.0]) == [1.0, 0.0]  # u is clipped at U_MIN


def test_search_runs_two_trials_and_trains_with_the_best(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    cfg = small_cfg(tiny_dataset, loss__search_trials=2, out=str(tmp_path / "run"))
    run_dir, result = train_searched(cfg, log=QUIET)
    assert result["method"] == "search"
    desc = result["policy"]
    assert len(desc["trials"]) == 2 and desc["search_seconds"] > 0
    assert all(t["reports"] >= 1 for t in desc["trials"])  # intermediate values for the pruner
    best = desc["trials"][desc["best_trial"]]
    assert desc["best_valid_auc"] == max(
        t["valid_auc"] for t in desc["trials"] if t["valid_auc"] is not None
    )
    w = [desc["weights"][n] for n in NAMES]
    assert sum(w) == pytest.approx(1.0, abs=1e-6)
    assert w == pytest.approx([best["weights"][n] for n in NAMES], abs=1e-6)
    saved = json.loads((run_dir / "search.json").read_text())
    assert saved["method"] == "search" and saved["weights"] == pytest.approx(w, abs=1e-6)
    # the final training is exactly a fixed-weights run with the chosen weights
    chosen = saved["weights"]
    ref = Trainer(small_cfg(tiny_dataset, loss__method="weights", loss__weights=chosen), log=QUIET)
    assert ref.fit()["test"] == result["test"]
    # resuming a finished search run returns its result without searching again
    _, again = train_searched(cfg, resume=True, log=QUIET)
    assert again["test"] == result["test"] and again["policy"] == desc


@pytest.mark.parametrize(
    ("over", "msg"),
    [
        ({"loss__search_trials": 0}, "loss.search_trials must be >= 1"),
        ({"loss__search_epochs": 0}, "loss.search_epochs must be >= 1"),
        ({"loss__search_rows": 0}, "loss.search_rows must be >= 1"),
        ({"loss__controller": "c.pt"}, "--controller applies to"),
    ],
)
def test_search_rejects_bad_settings(
    tiny_dataset: Path, tmp_path: Path, over: dict[str, Any], msg: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=msg):
        train_searched(small_cfg(tiny_dataset, out=str(out), **over), log=QUIET)
    assert not out.exists()


def test_an_interrupted_search_run_resumes_without_searching_again(
    tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autoloss.train.search as search

    cfg = small_cfg(tiny_dataset, loss__search_trials=2, train__epochs=2, out=str(tmp_path / "r"))
    _, whole = train_searched(cfg.copy(), overwrite=True, log=QUIET)
    real_eval = Trainer._evaluate_and_track

    def killed_in_epoch_two(self: Trainer, *losses: float) -> bool:
        if self.epoch == 2 and self.run_dir is not None:
            raise KeyboardInterrupt  # after epoch 1's checkpoint
        return real_eval(self, *losses)

    monkeypatch.setattr(Trainer, "_evaluate_and_track", killed_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_searched(cfg.copy(), overwrite=True, log=QUIET)
    assert (tmp_path / "r" / "search.json").is_file() and (
        tmp_path / "r" / "checkpoint.pt"
    ).is_file()
    monkeypatch.setattr(Trainer, "_evaluate_and_track", real_eval)
    monkeypatch.setattr(search, "search_weights", lambda *a, **k: pytest.fail("searched again"))
    _, resumed = train_searched(cfg.copy(), resume=True, log=QUIET)
    assert resumed["method"] == "search" and resumed["test"] == whole["test"]
    assert resumed["policy"]["trials"] == whole["policy"]["trials"]
