"""No silent garbage, no lost work: option checks, the non-finite guard, resume rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from test_trainer import small_cfg

from autoloss.cli import main
from autoloss.errors import ConfigError, TrainingDiverged
from autoloss.losses import register_candidate, unregister_candidate
from autoloss.train.run import train_run
from autoloss.train.rundir import RunDir
from autoloss.train.trainer import Trainer

QUIET: Any = lambda s: None  # noqa: E731


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--epochs", "0"], "'train.epochs' (from --epochs) must be >= 1, got 0"),
        (["--epochs", "-1"], "'train.epochs' (from --epochs) must be >= 1"),
        (["--threads", "-3"], "'train.num_threads' (from --threads) must be in 0..1024 (0: auto)"),
        (["--threads", "100000"], "'train.num_threads' (from --threads) must be in 0..1024"),
        (["--lr", "-0.1"], "'optim.lr' (from --lr) must be finite and > 0"),
        (["--lr", "nan"], "'optim.lr' (from --lr) must be finite and > 0"),
        (["--batch-size", "0"], "'optim.batch_size' (from --batch-size) must be >= 1"),
        (["--dropout", "1.5"], "'model.dropout' (from --dropout) must be in [0, 1)"),
        (["--set", "train.on_nonfinite=maybe"], "'train.on_nonfinite' (from --set) must be"),
        (["--set", "train.checkpoint_minutes=-1"], "'train.checkpoint_minutes' (from --set)"),
    ],
)
def test_bad_options_are_one_line_exit_2(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *option, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_a_config_file_is_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 0\n")
    with pytest.raises(ConfigError, match="train.epochs"):
        small_cfg(tmp_path).from_yaml(path)


@pytest.fixture
def flaky_candidate() -> Any:
    """A candidate loss that is NaN in the third training call (a bad batch)."""
    calls = [0]

    def flaky(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if s.requires_grad:
            calls[0] += 1
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            s, y.to(s.dtype), reduction="none"
        )
        return loss * float("nan") if calls[0] == 3 and s.requires_grad else loss

    register_candidate("flaky", flaky)
    yield
    unregister_candidate("flaky")


def test_nonfinite_loss_stops_with_one_line_and_keeps_nothing_wrong(
    tiny_dataset: Path, tmp_path: Path, flaky_candidate: Any
) -> None:
    cfg = small_cfg(tiny_dataset, loss__method="uniform", loss__candidates="ce,flaky")
    cfg.out = str(tmp_path / "r")
    with pytest.raises(TrainingDiverged) as err:
        train_run(cfg, log=QUIET)
    msg = str(err.value)
    assert "step 3" in msg and "candidate losses not finite: flaky" in msg and "\n" not in msg
    assert not (tmp_path / "r").exists()  # no checkpoint yet: a failed fresh run leaves nothing


def test_nonfinite_loss_skip_mode_skips_the_batch(
    tiny_dataset: Path, tmp_path: Path, flaky_candidate: Any
) -> None:
    cfg = small_cfg(
        tiny_dataset,
        loss__method="uniform",
        loss__candidates="ce,flaky",
        train__on_nonfinite="skip",
        out=str(tmp_path / "r"),
    )
    run_dir, result = train_run(cfg, log=QUIET)
    assert result["nonfinite_skipped"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in result["test"].values())
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["type"] == "nonfinite"] == [3]


def test_divergence_without_nan_is_warned_about(tiny_dataset: Path) -> None:
    cfg = small_cfg(tiny_dataset, optim__lr=1e9, train__epochs=1)
    result = Trainer(cfg, log=QUIET).fit()
    assert "training may have diverged" in result["warnings"][0]
    healthy = Trainer(small_cfg(tiny_dataset, train__epochs=1), log=QUIET).fit()
    assert "warnings" not in healthy


def _interrupted_run(tiny_dataset: Path, out: Path, at_step: int, **over: Any) -> None:
    real = Trainer.train_step

    def killed(self: Trainer, batch: Any) -> Any:
        if self.step == at_step:
            raise KeyboardInterrupt
        return real(self, batch)

    cfg = small_cfg(tiny_dataset, out=str(out), **over)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "train_step", killed)
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, log=QUIET)


def test_checkpoint_every_steps_inside_an_epoch(tiny_dataset: Path, tmp_path: Path) -> None:
    _interrupted_run(tiny_dataset, tmp_path / "r", 11, train__checkpoint_every=4)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert state["position"]["step"] == 8 and state["position"]["in_epoch"]
    assert state["position"]["epoch_batches"] == 8  # 19 batches per epoch: mid-epoch
    log = tmp_path / "r" / "metrics.jsonl"
    assert not log.exists() or all(
        json.loads(x)["step"] <= 11 for x in log.read_text().splitlines()
    )


def test_resume_refuses_changed_settings_and_accepts_harmless_ones(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    _interrupted_run(tiny_dataset, out, 11, train__checkpoint_every=4)
    assert main(["train", "--resume", "--out", str(out), "--lr", "0.5", "--seed", "99"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.003 -> 0.5" in err and "train.seed: 2021 -> 99" in err
    assert err.count("\n") == 1
    # the run's own settings come from its config.yaml; where it writes and shows may change
    assert main(["train", "--resume", "--out", str(out), "--progress", "off"]) == 0
    assert json.loads((out / "result.json").read_text())["epochs"] == 3


def test_a_run_records_its_thread_count_and_a_resume_keeps_it(
    tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    # 0 = auto: the count this process computes with is what config.yaml records
    _interrupted_run(tiny_dataset, out, 11, train__checkpoint_every=4, train__num_threads=0)
    saved = (out / "config.yaml").read_text()
    used = torch.get_num_threads()
    assert f"num_threads: {used}" in saved
    other = used + 1
    assert main(["train", "--resume", "--out", str(out), "--threads", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"train.num_threads: {used} -> {other}" in err and err.count("\n") == 1
    assert main(["train", "--resume", "--out", str(out)]) == 0  # its own count
    assert json.loads((out / "result.json").read_text())["threads"] == used


def test_resume_before_the_first_checkpoint_starts_again(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r"
    train_run(small_cfg(tiny_dataset, out=str(out)), log=QUIET)
    for name in ("result.json", "model.pt", "metrics.jsonl"):  # what kill -9 before the first
        (out / name).unlink()  # checkpoint leaves: config.yaml and dataset/ only
    _, resumed = train_run(small_cfg(tiny_dataset, out=str(out)), resume=True, log=QUIET)
    _, fresh = train_run(small_cfg(tiny_dataset, out=str(tmp_path / "f")), log=QUIET)
    assert resumed["test"] == fresh["test"]


def test_truncate_records_drops_later_steps_and_a_torn_line(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.metrics.write_text(
        '{"type": "eval", "step": 5}\n{"type": "policy", "step": 9}\n{"type": "eval", "st'
    )
    rd.truncate_records(5)
    assert rd.metrics.read_text() == '{"type": "eval", "step": 5}\n'


def test_select_by_logloss_and_temperature_scaled_test_logloss(tiny_dataset: Path) -> None:
    by_auc = Trainer(small_cfg(tiny_dataset, train__epochs=3), log=QUIET)
    by_auc.fit()
    by_loss = Trainer(
        small_cfg(tiny_dataset, train__epochs=3, train__select_by="logloss"), log=QUIET
    )
    result = by_loss.fit()
    evals = [r for r in by_loss.history if r["type"] == "eval"]
    best = min(evals, key=lambda r: r["logloss"])
    assert result["best_epoch"] == best["epoch"]
    assert by_auc.best["auc"] == max(r["auc"] for r in by_auc.history if r["type"] == "eval")
    test = result["test"]
    assert test["temperature"] > 0 and test["logloss_ts"] > 0
    # the fitted temperature minimises the validation logloss: no worse than T = 1 there
    from autoloss.metrics import evaluate_logloss, fit_temperature

    logits, y = by_loss.predict_split("valid")
    t = fit_temperature(y, logits, "binary")
    assert (
        evaluate_logloss(y, logits / t, "binary") <= evaluate_logloss(y, logits, "binary") + 1e-12
    )


def test_writing_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    from autoloss.files import write_text

    with pytest.raises(ConfigError, match="cannot write here") as err:
        write_text(tmp_path / "no" / "such" / "file.txt", "x")
    assert "\n" not in str(err.value)
