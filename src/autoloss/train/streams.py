"""The streams a training loop keeps across checkpoints: the endless validation batches a
learnt policy updates on, and the epoch's running training losses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from autoloss.data.spec import Batch
from autoloss.errors import ConfigError
from autoloss.train.distributed import Batches


class ValidStream:
    """An endless stream of validation mini-batches, reshuffled each time it is exhausted.

    Its position (epoch, batches taken) travels in checkpoints, so a resumed run draws the same
    validation batches as an uninterrupted one.
    """

    def __init__(self, it: Batches, device: torch.device) -> None:
        self.it, self.device = it, device
        self.epoch, self.pos = 0, 0
        self._cur: Iterator[Batch] | None = None

    def next(self) -> Batch:
        for _ in range(2):
            if self._cur is None:
                self._cur = iter(self.it.epoch(self.epoch, start=self.pos))
            try:
                batch = next(self._cur)
            except StopIteration:
                self._cur, self.epoch, self.pos = None, self.epoch + 1, 0
                continue
            self.pos += 1
            return batch.to(self.device)
        raise ConfigError(
            "the validation split is empty; a learnt loss policy needs validation rows"
        )

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._cur = int(state["epoch"]), int(state["pos"]), None


class EpochLoss:
    """Running means of the epoch's training objective (the policy's mixture) and of the plain
    logloss of the same batches (comparable with the validation logloss), kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.total = torch.zeros((), device=device)
        self.plain = torch.zeros((), device=device)
        self.n = 0

    def add(self, loss: torch.Tensor, plain: torch.Tensor) -> None:
        self.total += loss.detach()
        self.plain += plain.detach()
        self.n += 1

    def mean(self) -> tuple[float, float]:
        return float(self.total) / max(self.n, 1), float(self.plain) / max(self.n, 1)

    def state(self) -> dict[str, Any]:
        return {"total": self.total.detach().cpu(), "plain": self.plain.detach().cpu(), "n": self.n}

    def load(self, state: dict[str, Any]) -> None:
        self.total = state["total"].to(self.total.device)
        self.plain = state["plain"].to(self.plain.device)
        self.n = int(state["n"])
