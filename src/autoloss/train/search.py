"""``--loss search``: fixed candidate weights found by Optuna (TPE sampler + Hyperband pruner),
and :func:`train_any`, which trains a run of any ``--loss`` method (the search's outer loop, or
:func:`~autoloss.train.run.train_run` for every loss policy).

The BOHB-style baseline of the paper, an outer loop of trainings (not a loss policy): it runs
``loss.search_trials`` trials; each trains the same model in memory with fixed weights ``w`` for a
budget of ``loss.search_epochs`` epochs (of at most ``loss.search_rows`` training rows each, when
set), evaluates on the validation split about four times per epoch and reports the validation AUC
to the Hyperband pruner, which stops unpromising trials early. The trial with the best validation
AUC wins (the test split is never used for the choice), and the run then trains exactly like
``--loss weights:w*``; its result.json records ``method: search`` and the search in ``policy``.

Search space: one number ``u_k ∈ [1e-4, 1]`` per candidate, mapped to ``x_k = -ln u_k`` and
normalised, ``w = x / Σx``: under uniform ``u`` (TPE's start-up trials) this is the uniform
(Dirichlet(1)) distribution on the simplex, and single candidates (``u_k = 1 → w_k = 0``) are
reachable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoloss.data.store import EncodedDataset
from autoloss.errors import ConfigError
from autoloss.locks import hold_run
from autoloss.policies.base import config_candidates
from autoloss.policies.registry import SEARCH_METHOD, check_controller_option
from autoloss.train import run as runs
from autoloss.train.builder import run_dataset
from autoloss.train.config import RunConfig
from autoloss.train.result import RunResult
from autoloss.train.run import (
    FixedWeightsOutcome,
    check_resumable,
    check_run_dir,
    run_dir_of,
    train_run,
)
from autoloss.train.trainer import Trainer

METHOD = SEARCH_METHOD
#: Validation evaluations (pruning checkpoints) per trial epoch.
REPORTS_PER_EPOCH = 4
U_MIN = 1e-4


def simplex_weights(u: list[float]) -> list[float]:
    """Map ``u ∈ [U_MIN, 1]^K`` to the simplex: ``-ln u`` normalised (uniform if all are 0)."""
    x = [-math.log(max(v, U_MIN)) for v in u]
    total = sum(x)
    if total <= 0:
        return [1.0 / len(u)] * len(u)
    return [v / total for v in x]


def check_search_config(cfg: RunConfig) -> None:
    lc = cfg.loss
    if lc.search_trials < 1:
        raise ConfigError(f"loss.search_trials must be >= 1, got {lc.search_trials}")
    if lc.search_epochs < 1:
        raise ConfigError(f"loss.search_epochs must be >= 1, got {lc.search_epochs}")
    if lc.search_rows is not None and lc.search_rows < 1:
        raise ConfigError(f"loss.search_rows must be >= 1, got {lc.search_rows}")
    check_controller_option(METHOD, lc)
    config_candidates(lc, "binary")


def train_searched(
    cfg: RunConfig, *, resume: bool = False, overwrite: bool = False, log: Any = None
) -> tuple[Path, RunResult]:
    """Search the weights (unless a resumed run already did), then train with them. The run
    directory is locked for the whole of it (:func:`~autoloss.locks.hold_run`; re-entrant)."""
    check_search_config(cfg)
    rd = run_dir_of(cfg)
    cfg = cfg.copy()
    cfg.out = str(rd.path)  # the search and the training write one directory
    with hold_run(rd.path):
        check_run_dir(rd, resume=resume, overwrite=overwrite)
        if resume:
            check_resumable(rd, cfg)
        saved = rd.read_json(rd.search) if resume else None
        if saved is not None:
            outcome = FixedWeightsOutcome.from_dict(saved)
        elif resume and rd.result.exists():
            return rd.path, rd.read_result() or RunResult()
        else:
            say = log or logging.getLogger(__name__).info
            outcome = search_weights(cfg, run_dataset(cfg), say)
        return train_run(cfg, resume=resume, overwrite=overwrite, log=log, preset=outcome)


def train_any(cfg: RunConfig, **options: Any) -> tuple[Path, RunResult]:
    """Train a run of any ``--loss`` method: :func:`train_searched` for ``search`` (an outer
    loop of trainings), :func:`~autoloss.train.run.train_run` for every loss policy. ``options``
    (``resume``, ``overwrite``, ``log``) go to that function."""
    if cfg.loss.method == METHOD and cfg.train.embeddings == "sharded":
        raise ConfigError(
            "train.embeddings=sharded: --loss search trains its trials in one process on "
            "replicated tables: search first, then train the weights it finds with sharded tables"
        )
    train = train_searched if cfg.loss.method == METHOD else runs.train_run
    return train(cfg, **options)


def search_weights(
    base: RunConfig, dataset: EncodedDataset, log: Callable[[str], None]
) -> FixedWeightsOutcome:
    """Run the Optuna search on ``dataset``; the outcome holds the best weights and every trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lc = base.loss
    names = list(lc.candidates)
    n_train = len(dataset.split("train"))
    rows = min(n_train, lc.search_rows) if lc.search_rows else n_train
    total_steps = max(1, -(-rows // base.optim.batch_size)) * lc.search_epochs
    eval_every = max(1, total_steps // min(total_steps, REPORTS_PER_EPOCH * lc.search_epochs))
    log(
        f"search: {lc.search_trials} trials over the weights of {','.join(names)}, "
        f"{total_steps} steps each, validation every {eval_every} steps"
    )
    max_steps = total_steps if lc.search_rows else 0
    objective = _objective(base, dataset, log, eval_every, max_steps)
    max_reports = -(-total_steps // eval_every)
    study = optuna.create_study(
        # Hyperband assigns trials to brackets by a hash of the study name: a fixed name
        # makes the search reproducible (optuna's default name is random).
        study_name=f"autoloss-search-{base.train.seed}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(
            seed=base.train.seed, n_startup_trials=min(10, lc.search_trials)
        ),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_reports, reduction_factor=3
        ),
    )
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=lc.search_trials, catch=())
    seconds = time.perf_counter() - t0
    best = _best_trial(study)
    weights = list(best.user_attrs["weights"])
    log(f"search: best {_fmt(names, weights)} (trial {best.number}) in {seconds:.1f}s")
    return FixedWeightsOutcome(METHOD, weights, _summary(study, best, names, seconds))


def _objective(
    base: RunConfig,
    dataset: EncodedDataset,
    log: Callable[[str], None],
    eval_every: int,
    max_steps: int,
) -> Callable[[Any], float]:
    """A trial: train with the weights it suggests, report the validation AUC to the pruner."""
    import optuna

    names = list(base.loss.candidates)

    def objective(trial: optuna.Trial) -> float:
        w = simplex_weights([trial.suggest_float(f"u_{n}", U_MIN, 1.0) for n in names])
        trial.set_user_attr("weights", w)
        cfg = _trial_config(base, w, eval_every, max_steps)
        reports = [0]

        def on_eval(rec: dict[str, Any]) -> None:
            reports[0] += 1
            trial.report(float(rec["auc"]), reports[0])
            if trial.should_prune():
                raise optuna.TrialPruned()

        trainer = Trainer(cfg, dataset=dataset, on_eval=on_eval, log=lambda s: None)
        try:
            trainer.fit()
        except optuna.TrialPruned:
            log(
                f"search trial {trial.number}: {_fmt(names, w)} pruned after {reports[0]} evaluations"
            )
            raise
        value = float(trainer.best["auc"])
        log(f"search trial {trial.number}: {_fmt(names, w)} valid AUC {value:.4f}")
        return value

    return objective


def _trial_config(base: RunConfig, w: list[float], eval_every: int, max_steps: int) -> RunConfig:
    cfg = base.copy()
    cfg.out = None
    cfg.loss.method = "weights"
    cfg.loss.weights = w
    cfg.loss.controller = None
    cfg.train.epochs = base.loss.search_epochs
    cfg.train.eval_every_steps = eval_every
    cfg.train.max_steps = max_steps
    cfg.train.progress = "off"
    return cfg


def _best_trial(study: Any) -> Any:
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        return max(done, key=lambda t: float(t.value or -math.inf))
    # every trial pruned: the best intermediate validation AUC
    return max(study.trials, key=lambda t: max(t.intermediate_values.values(), default=-math.inf))


def _summary(study: Any, best: Any, names: list[str], seconds: float) -> dict[str, Any]:
    return {
        "search_seconds": round(seconds, 3),
        "best_trial": best.number,
        "best_valid_auc": best.value,
        "trials": [
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "valid_auc": t.value,
                "reports": len(t.intermediate_values),
                "weights": dict(zip(names, t.user_attrs.get("weights", []))),
            }
            for t in study.trials
        ],
    }


def _fmt(names: list[str], w: list[float]) -> str:
    return ",".join(f"{n}={v:.3f}" for n, v in zip(names, w))
