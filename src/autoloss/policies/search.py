"""``search``: fixed candidate weights found by Optuna (TPE sampler + Hyperband pruner).

The BOHB-style baseline of the paper. Before training (``before_training``) it runs
``search_trials`` trials; each trains the same model in memory with fixed weights ``w`` for a
budget of ``search_epochs`` epochs (of at most ``search_rows`` training rows each, when set),
evaluates on the validation split about four times per epoch and reports the validation AUC to the
Hyperband pruner, which stops unpromising trials early. The trial with the best validation AUC
wins (the test split is never used for the choice), and the run then trains exactly like
``--loss weights:w*`` (the global random state is restored after the search).

Search space: one number ``u_k ∈ [1e-4, 1]`` per candidate, mapped to ``x_k = -ln u_k`` and
normalised, ``w = x / Σx``: under uniform ``u`` (TPE's start-up trials) this is the uniform
(Dirichlet(1)) distribution on the simplex, and single candidates (``u_k = 1 → w_k = 0``) are
reachable. ``describe()`` reports the best weights, every trial and the search's wall time.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch

from autoloss.errors import ConfigError
from autoloss.losses import CandidateSet
from autoloss.policies import register_policy
from autoloss.policies.base import LossPolicy, PolicyInput
from autoloss.policies.controller import policy_candidates
from autoloss.train.config import LossConfig

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


class SearchedWeights(LossPolicy):
    """Uniform weights until :meth:`before_training` has searched, then the best weights found."""

    name = "search"
    fixed: torch.Tensor
    searched: torch.Tensor

    def __init__(self, candidates: CandidateSet, cfg: LossConfig) -> None:
        super().__init__(candidates)
        if cfg.search_trials < 1:
            raise ConfigError(f"loss.search_trials must be >= 1, got {cfg.search_trials}")
        if cfg.search_epochs < 1:
            raise ConfigError(f"loss.search_epochs must be >= 1, got {cfg.search_epochs}")
        if cfg.search_rows is not None and cfg.search_rows < 1:
            raise ConfigError(f"loss.search_rows must be >= 1, got {cfg.search_rows}")
        self.trials = int(cfg.search_trials)
        self.epochs = int(cfg.search_epochs)
        self.rows = cfg.search_rows
        k = len(candidates)
        self.register_buffer("fixed", torch.full((k,), 1.0 / k))
        self.register_buffer("searched", torch.zeros((), dtype=torch.bool))
        self.summary: dict[str, Any] = {}

    def weights(self, inp: PolicyInput) -> torch.Tensor:
        fixed = self.fixed.to(device=inp.losses.device, dtype=inp.losses.dtype)
        return fixed.expand(inp.losses.shape[0], -1)

    def before_training(self, trainer: Any) -> None:
        if bool(self.searched):  # a resumed run keeps the weights it found
            return
        states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            best, summary = self._search(trainer)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
        with torch.no_grad():
            self.fixed.copy_(torch.tensor(best, dtype=self.fixed.dtype))
            self.searched.fill_(True)
        self.summary = summary

    def _search(self, trainer: Any) -> tuple[list[float], dict[str, Any]]:
        import optuna

        from autoloss.train.trainer import Trainer

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        base = trainer.cfg
        names = list(self.candidates.names)
        n_train = len(trainer.dataset.split("train"))
        rows = min(n_train, self.rows) if self.rows else n_train
        steps_per_epoch = max(1, -(-rows // base.optim.batch_size))
        total_steps = steps_per_epoch * self.epochs
        reports = min(total_steps, REPORTS_PER_EPOCH * self.epochs)
        eval_every = max(1, total_steps // reports)
        max_reports = -(-total_steps // eval_every)
        log = trainer.log
        log(
            f"search: {self.trials} trials over the weights of {','.join(names)}, "
            f"{total_steps} steps each, validation every {eval_every} steps"
        )

        def objective(trial: optuna.Trial) -> float:
            u = [trial.suggest_float(f"u_{n}", U_MIN, 1.0) for n in names]
            w = simplex_weights(u)
            trial.set_user_attr("weights", w)
            cfg = base.copy()
            cfg.out = None
            cfg.loss.method = "weights"
            cfg.loss.weights = w
            cfg.loss.controller = None
            cfg.train.epochs = self.epochs
            cfg.train.eval_every_steps = eval_every
            cfg.train.max_steps = total_steps if self.rows else 0
            cfg.train.progress = "off"
            seen = [0]

            def on_eval(rec: dict[str, Any]) -> None:
                seen[0] += 1
                trial.report(float(rec["auc"]), seen[0])
                if trial.should_prune():
                    raise optuna.TrialPruned()

            t = Trainer(
                cfg, run_dir=None, dataset=trainer.dataset, on_eval=on_eval, log=lambda s: None
            )
            try:
                t.fit()
            except optuna.TrialPruned:
                log(
                    f"search trial {trial.number}: {_fmt(names, w)} pruned after {seen[0]} evaluations"
                )
                raise
            value = float(t.best["auc"])
            log(f"search trial {trial.number}: {_fmt(names, w)} valid AUC {value:.4f}")
            return value

        study = optuna.create_study(
            # Hyperband assigns trials to brackets by a hash of the study name: a fixed name
            # makes the search reproducible (optuna's default name is random).
            study_name=f"autoloss-search-{base.train.seed}",
            direction="maximize",
            sampler=optuna.samplers.TPESampler(
                seed=base.train.seed, n_startup_trials=min(10, self.trials)
            ),
            pruner=optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=max_reports, reduction_factor=3
            ),
        )
        t0 = time.perf_counter()
        study.optimize(objective, n_trials=self.trials, catch=())
        seconds = time.perf_counter() - t0
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:
            best = max(done, key=lambda t: float(t.value or -math.inf))
        else:  # every trial pruned: the best intermediate validation AUC
            best = max(
                study.trials, key=lambda t: max(t.intermediate_values.values(), default=-math.inf)
            )
        weights = list(best.user_attrs["weights"])
        summary = {
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
        log(f"search: best {_fmt(names, weights)} (trial {best.number}) in {seconds:.1f}s")
        return weights, summary

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weights": dict(zip(self.candidates.names, self.fixed.tolist()))}
        out.update(self.summary)
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {"summary": self.summary}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, dict):
            self.summary = dict(state.get("summary") or {})


def _fmt(names: list[str], w: list[float]) -> str:
    return ",".join(f"{n}={v:.3f}" for n, v in zip(names, w))


def _make(cfg: LossConfig, task: str) -> SearchedWeights:
    if cfg.controller:
        raise ConfigError("--controller applies to --loss autoloss / autoloss-soft, not search")
    return SearchedWeights(policy_candidates(cfg, task), cfg)


register_policy("search", _make)
