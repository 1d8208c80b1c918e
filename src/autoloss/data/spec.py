"""What a model needs to know about the features, and what one batch carries.

These two types are the contract between the data layer and the models:

* :class:`FeatureSpec` is derived from an encoded dataset's ``meta.json``.
* :class:`Batch` is what :class:`autoloss.data.batches.BatchIterator` yields.

Ids are *field-local*: in every categorical field, id 0 is the out-of-vocabulary (rare or unseen)
value and ids ``1..vocab_size-1`` are known values. Models add per-field offsets themselves
(one shared embedding table). Multi-valued fields ("bags") are padded with -1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the data layer works without loading torch (prepare starts fast)
    import torch


@dataclass(frozen=True)
class FeatureSpec:
    """Feature layout of a dataset.

    Attributes:
        cat_names: names of single-valued categorical fields (columns of ``Batch.x``).
        cat_vocab: vocabulary size of each categorical field (including the OOV id 0).
        dense_names: names of raw numeric fields (columns of ``Batch.dense``), standardised floats.
        bag_names: names of multi-valued fields (``Batch.bags[:, j, :]``).
        bag_vocab: vocabulary size of each multi-valued field (including OOV id 0).
        num_classes: 2 for binary tasks, C for multi-class.
    """

    cat_names: tuple[str, ...]
    cat_vocab: tuple[int, ...]
    dense_names: tuple[str, ...] = ()
    bag_names: tuple[str, ...] = ()
    bag_vocab: tuple[int, ...] = ()
    num_classes: int = 2

    @property
    def task(self) -> str:
        return "binary" if self.num_classes == 2 else "multiclass"

    @property
    def out_dim(self) -> int:
        """Number of logits per example: 1 for binary (squeezed to (B,)), C otherwise."""
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def num_fields(self) -> int:
        """Fields seen by interaction layers: categorical + dense + bags, in that order."""
        return len(self.cat_names) + len(self.dense_names) + len(self.bag_names)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> FeatureSpec:
        fields = meta["fields"]
        return cls(
            cat_names=tuple(f["name"] for f in fields if f["kind"] == "categorical"),
            cat_vocab=tuple(int(f["vocab_size"]) for f in fields if f["kind"] == "categorical"),
            dense_names=tuple(f["name"] for f in fields if f["kind"] == "dense"),
            bag_names=tuple(f["name"] for f in fields if f["kind"] == "multivalue"),
            bag_vocab=tuple(int(f["vocab_size"]) for f in fields if f["kind"] == "multivalue"),
            num_classes=int(meta.get("num_classes", 2)),
        )


@dataclass
class Batch:
    """One mini-batch.

    Attributes:
        x: (B, F) int64 field-local ids of the categorical fields.
        y: (B,) int64 labels (0/1 for binary, 0..C-1 for multi-class).
        dense: (B, Fd) float32 standardised numeric values, or None.
        bags: (B, M, L) int64 field-local ids of multi-valued fields padded with -1, or None.
        rows: (B,) int64 positions of the rows in their split (for per-example memories), or None.
    """

    x: torch.Tensor
    y: torch.Tensor
    dense: torch.Tensor | None = None
    bags: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            x=self.x.to(device, non_blocking=non_blocking),
            y=self.y.to(device, non_blocking=non_blocking),
            dense=mv(self.dense),
            bags=mv(self.bags),
            extra=self.extra,
            rows=mv(self.rows),
        )

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The model's positional inputs: ``model(*batch.inputs())``."""
        return self.x, self.dense, self.bags
