"""Experiment tracking: the records of ``metrics.jsonl`` and the run's config, sent to TensorBoard
and/or MLflow as well (``--set train.tracking=tensorboard,mlflow``; the ``tracking`` extra).

``metrics.jsonl`` stays the run's own record; a tracker receives every record written there
(:meth:`RunDir.append_record`), at the record's ``step``:

* an evaluation (``type: eval``) as ``<split>/<key>``: ``valid/auc``, ``valid/logloss``,
  ``valid/train_loss``, ...;
* a loss-policy record (``type: policy``) as ``policy/<key>``: the candidates' mean weights
  ``policy/p_<name>`` (and per class, ``policy/p_<name>_y<c>``), ``policy/tau``, the policy's
  losses, ...; any other type alike (``nonfinite/skipped``);
* at the end, the numbers of ``result.json`` as ``result/...`` (``result/test/auc``,
  ``result/best_epoch``, ...) at the last step.

Where they go:

* ``tensorboard``: ``RUN/tensorboard/`` (``SummaryWriter``; the config as text);
  ``tensorboard --logdir RUN/tensorboard``;
* ``mlflow``: the store ``MLFLOW_TRACKING_URI`` names, else a local file store in ``RUN/mlruns``
  (``mlflow ui --backend-store-uri RUN/mlruns``), experiment ``MLFLOW_EXPERIMENT_NAME`` or
  ``autoloss``, one MLflow run per run directory named after it: the config as params
  (``model.embed_dim``, ...), the records as metrics, ``config.yaml`` and ``result.json`` as
  artifacts. Its id is kept in ``RUN/mlflow_run_id``.

A resumed run goes on where it stopped: TensorBoard drops the events after the checkpoint (the
work redone), MLflow continues the same run (``RUN/mlflow_run_id``) and skips the values it
already holds (a resume is exact: they are the same). The ranks but 0 of a distributed run, whose
RunDir is ``read_only``, track nothing. A tracker that fails while the run trains is switched off
with one warning: training goes on, ``metrics.jsonl`` keeps every record.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from autoloss.errors import ConfigError
from autoloss.files import write_text
from autoloss.train.config import RunConfig
from autoloss.train.result import RunResult
from autoloss.train.rundir import RunDir

logger = logging.getLogger(__name__)

INSTALL = "pip install 'autoloss-rec[tracking]'"
TENSORBOARD_DIR = "tensorboard"
MLRUNS_DIR = "mlruns"
MLFLOW_RUN_ID = "mlflow_run_id"
MLFLOW_EXPERIMENT = "autoloss"
#: Longest parameter value sent to MLflow (older servers refuse more than 500 characters).
MAX_PARAM_CHARS = 500


# ---------------------------------------------------------------------------------- names
def record_scalars(rec: dict[str, Any]) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` record, by tracker tag (module docstring)."""
    kind = str(rec.get("type", "record"))
    prefix = str(rec.get("split", kind)) if kind == "eval" else kind
    return {
        f"{prefix}/{key}": float(value)
        for key, value in rec.items()
        if key not in ("type", "split", "step") and _number(value)
    }


def result_scalars(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of ``result.json`` (nested objects flattened), as ``result/...``."""
    out: dict[str, float] = {}

    def walk(prefix: str, obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            if isinstance(value, dict):
                walk(f"{prefix}/{key}", value)
            elif _number(value):
                out[f"{prefix}/{key}"] = float(value)

    walk("result", result)
    return out


def config_params(config: dict[str, Any]) -> dict[str, str]:
    """The config as flat ``section.key`` -> text (lists as JSON), for MLflow's params."""
    out: dict[str, str] = {}

    def walk(prefix: str, obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(name + ".", value)
            else:
                text = value if isinstance(value, str) else json.dumps(value)
                out[name] = text[:MAX_PARAM_CHARS]

    walk("", config)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float)  # bools too: 0 / 1


def _mlflow_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in a metric or param key replaced by ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", name)


# ---------------------------------------------------------------------------------- trackers
class Tracker:
    """Where a run's records go besides ``metrics.jsonl``."""

    name = "tracker"

    def start(self, config: dict[str, Any], *, resumed_at: int | None = None) -> None:
        """The run starts (``resumed_at``: it resumes from its checkpoint at that step)."""

    def record(self, rec: dict[str, Any]) -> None:
        """One record, as written to ``metrics.jsonl``."""

    def finish(self, result: RunResult) -> None:
        """The run is complete: ``result`` is what its ``result.json`` holds."""

    def close(self, status: str) -> None:
        """The process is done with the run: ``FINISHED``, ``KILLED`` (interrupted: it may be
        resumed) or ``FAILED``."""


class TensorBoardTracker(Tracker):
    """Scalars into ``RUN/tensorboard`` (torch's ``SummaryWriter``)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer_class = SummaryWriter
        self.dir = run_dir / TENSORBOARD_DIR
        self.writer: Any = None

    def start(self, config: dict[str, Any], *, resumed_at: int | None = None) -> None:
        # purge_step: TensorBoard drops the events from there on written before (the redone work)
        purge = None if resumed_at is None else resumed_at + 1
        self.writer = self._writer_class(str(self.dir), purge_step=purge)
        if resumed_at is None:
            text = yaml.safe_dump(config, sort_keys=False)
            self.writer.add_text("config", "".join(f"    {ln}\n" for ln in text.splitlines()))
            self.writer.flush()

    def record(self, rec: dict[str, Any]) -> None:
        for tag, value in record_scalars(rec).items():
            self.writer.add_scalar(tag, value, rec["step"])
        self.writer.flush()  # a killed run keeps in TensorBoard what metrics.jsonl has

    def finish(self, result: RunResult) -> None:
        step = result.steps or 0
        for tag, value in result_scalars(result.to_dict()).items():
            self.writer.add_scalar(tag, value, step)

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowTracker(Tracker):
    """One MLflow run per run directory (module docstring)."""

    name = "mlflow"

    def __init__(self, run_dir: Path) -> None:
        import mlflow  # noqa: F401  (the extra is there: checked before the run starts)

        self.run_dir = run_dir
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or (
            (run_dir / MLRUNS_DIR).resolve().as_uri()
        )
        self.client: Any = None
        self.run_id: str | None = None
        #: per metric key, the last step the MLflow run holds (a resumed run skips those)
        self.logged: dict[str, int] = {}

    @property
    def id_file(self) -> Path:
        return self.run_dir / MLFLOW_RUN_ID

    def start(self, config: dict[str, Any], *, resumed_at: int | None = None) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        if self.uri.startswith("file:"):
            # MLflow 3 refuses a file store unless asked: the local default is one on purpose
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=self.uri)
        known = self.id_file.read_text(encoding="utf-8").strip() if self.id_file.is_file() else ""
        if known and resumed_at is not None:
            try:
                run = self.client.get_run(known)
            except MlflowException:
                run = None  # not in this store (another MLFLOW_TRACKING_URI): a new MLflow run
            if run is not None:
                self.run_id = known
                self.client.update_run(known, status="RUNNING")
                for key in run.data.metrics:
                    steps = [m.step for m in self.client.get_metric_history(known, key)]
                    self.logged[key] = max(steps, default=-1)
                return
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id if found is not None else self.client.create_experiment(experiment)
        )
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name)
        self.run_id = run.info.run_id
        write_text(self.id_file, self.run_id + "\n", what="the MLflow run id")
        self._params(config)
        if (self.run_dir / RunDir.CONFIG).is_file():
            self.client.log_artifact(self.run_id, str(self.run_dir / RunDir.CONFIG))

    def _params(self, config: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(_mlflow_key(k), v) for k, v in config_params(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for tag, value in values.items():
            key = _mlflow_key(tag)
            if step <= self.logged.get(key, -1):
                continue  # logged before the interruption (the same value: the resume is exact)
            metrics.append(Metric(key, value, now, step))
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def record(self, rec: dict[str, Any]) -> None:
        self._metrics(record_scalars(rec), int(rec["step"]))

    def finish(self, result: RunResult) -> None:
        self._metrics(
            {k: v for k, v in result_scalars(result.to_dict()).items() if math.isfinite(v)},
            result.steps or 0,
        )
        if (self.run_dir / RunDir.RESULT).is_file():
            self.client.log_artifact(self.run_id, str(self.run_dir / RunDir.RESULT))

    def close(self, status: str) -> None:
        if self.client is None or self.run_id is None:
            return
        if self.uri.startswith("file:") and not self.run_dir.exists():
            return  # a failed fresh run removed its directory, the store in it too
        self.client.set_terminated(self.run_id, status=status)
        self.client = None


#: ``train.tracking`` name -> tracker class.
TRACKER_CLASSES: dict[str, type[Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "mlflow": MLflowTracker,
}


def make_tracker(name: str, run_dir: Path) -> Tracker:
    """The tracker ``name`` for ``run_dir``; a missing extra is one line (ConfigError)."""
    try:
        return TRACKER_CLASSES[name](run_dir)  # type: ignore[call-arg]
    except ImportError:
        raise ConfigError(f"train.tracking={name} needs the 'tracking' extra: {INSTALL}") from None


# ---------------------------------------------------------------------------------- the run dir
class TrackedRunDir(RunDir):
    """A RunDir that sends what it writes to ``metrics.jsonl`` (and the run's start and end) to
    its trackers as well."""

    def __init__(self, rd: RunDir, trackers: list[Tracker]) -> None:
        self.__dict__.update(rd.__dict__)  # the same directory, state and all
        self.trackers = list(trackers)
        self.started = False

    def _each(self, what: str, *args: Any, **kwargs: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, what)(*args, **kwargs)
            except Exception as exc:
                self.trackers.remove(tracker)
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                logger.warning(
                    "train.tracking: %s switched off (%s: %s); metrics.jsonl has every record",
                    tracker.name,
                    type(exc).__name__,
                    first,
                )

    def _start(self, config: dict[str, Any] | None = None, resumed_at: int | None = None) -> None:
        if self.started:
            return
        self.started = True
        if config is None:
            config = RunConfig.from_yaml(self.config).to_dict() if self.config.is_file() else {}
        self._each("start", config, resumed_at=resumed_at)

    def save_config(self, cfg_dict: dict[str, Any]) -> None:
        super().save_config(cfg_dict)
        self._start(cfg_dict)

    def truncate_records(self, step: int) -> int:
        damaged = super().truncate_records(step)
        self._start(resumed_at=step)
        return damaged

    def append_record(self, rec: dict[str, Any]) -> None:
        super().append_record(rec)
        self._start()
        self._each("record", rec)

    def finish(self, result: RunResult) -> None:
        super().finish(result)
        self._start()
        self._each("finish", result)
        self.close("FINISHED")

    def close(self, status: str) -> None:
        if self.started:
            self._each("close", status)
        self.trackers = []


@contextmanager
def tracked(rd: RunDir, cfg: RunConfig) -> Iterator[RunDir]:
    """``rd``, tracked as ``cfg.train.tracking`` says (``rd`` itself when it names no tracker,
    or on a ``read_only`` RunDir). A missing extra is refused here, before the run starts."""
    names = list(dict.fromkeys(cfg.train.tracking))
    if not names or rd.read_only:
        yield rd
        return
    out = TrackedRunDir(rd, [make_tracker(name, rd.path) for name in names])
    try:
        yield out
    except KeyboardInterrupt:
        out.close("KILLED")
        raise
    except BaseException:
        out.close("FAILED")
        raise
    out.close("FINISHED")
