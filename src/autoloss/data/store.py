"""Memory-mapped reading of an encoded dataset directory (see ``docs/architecture.md``).

>>> ds = EncodedDataset("/tmp/autoloss-data/ml-binary")      # doctest: +SKIP
>>> train = ds.split("train"); train.x.shape, train.y.dtype  # doctest: +SKIP
((80611, 4), dtype('int32'))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.data.spec import FeatureSpec
from autoloss.errors import DataError

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class EncodedSplit:
    """One split of an encoded dataset: read-only memory maps.

    Attributes:
        name: ``train``, ``valid`` or ``test``.
        x: (N, F) int32 field-local ids of the categorical fields.
        y: (N,) int32 labels.
        dense: (N, Fd) float32 standardised numeric values, or None.
        bags: (N, M, L) int32 multi-valued field ids padded with -1, or None.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    dense: np.ndarray | None = None
    bags: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _load(path: Path, expected_rows: int, dtype: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise DataError("missing array of the encoded dataset", path=path) from exc
    except (ValueError, OSError) as exc:
        raise DataError(f"corrupt array ({exc})", path=path) from exc
    if arr.dtype != np.dtype(dtype) or arr.shape[0] != expected_rows:
        raise DataError(
            f"corrupt array: expected {expected_rows} rows of {dtype}, "
            f"found shape {arr.shape} of {arr.dtype}",
            path=path,
        )
    return arr


class EncodedDataset:
    """A prepared dataset directory: ``meta.json``, per-split ``*.npy`` memmaps, ``vocab/``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not self.path.is_dir():
            raise DataError("no such encoded dataset directory (run `autoloss prepare`)", path=path)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError("not an encoded dataset: meta.json is missing", path=path) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"corrupt meta.json ({exc})", path=meta_path) from exc
        if not isinstance(meta, dict) or "fields" not in meta or "splits" not in meta:
            raise DataError("corrupt meta.json: 'fields' or 'splits' missing", path=meta_path)
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"unsupported format_version {meta.get('format_version')!r} "
                f"(this autoloss reads {FORMAT_VERSION}); prepare the data again",
                path=meta_path,
            )
        self.meta: dict[str, Any] = meta
        self._splits: dict[str, EncodedSplit] = {}

    @cached_property
    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_meta(self.meta)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s for s in SPLITS if s in self.meta["splits"])

    def split(self, name: str) -> EncodedSplit:
        """Memory-map one split (``train``, ``valid`` or ``test``); checked against meta.json."""
        if name not in self.meta["splits"]:
            raise DataError(
                f"no split {name!r} (has {', '.join(self.split_names)})", path=self.path
            )
        if name not in self._splits:
            rows = int(self.meta["splits"][name])
            d = self.path / name
            spec = self.spec
            x = _load(d / "x.npy", rows, "int32")
            if x.ndim != 2 or x.shape[1] != len(spec.cat_names):
                raise DataError(
                    f"corrupt array: {x.shape[1] if x.ndim == 2 else '?'} columns, "
                    f"meta.json has {len(spec.cat_names)} categorical fields",
                    path=d / "x.npy",
                )
            y = _load(d / "y.npy", rows, "int32")
            dense = _load(d / "dense.npy", rows, "float32") if spec.dense_names else None
            bags = _load(d / "bags.npy", rows, "int32") if spec.bag_names else None
            self._splits[name] = EncodedSplit(name, x, y, dense, bags)
        return self._splits[name]

    def flipped(self, split: str) -> np.ndarray | None:
        """Which rows of ``split`` the label noise flipped: None, a prepared dataset has none
        (:class:`~autoloss.data.conditions.ConditionedDataset` knows its own)."""
        return None

    def noisy_rows(self, name: str) -> np.ndarray | None:
        """The per-row flags of a split's natural noise (the rows of noisy positives of the
        MovieLens implicit protocol: ``<split>/noisy.npy``), or None when it has none."""
        rel = self.meta.get("protocol", {}).get("implicit", {}).get("noisy_rows", {}).get(name)
        if rel is None:
            return None
        flags = _load(self.path / rel, int(self.meta["splits"][name]), "bool")
        return np.asarray(flags)

    def vocab(self, field: str) -> dict[str, Any]:
        """The saved vocabulary of a categorical or multi-valued field (``vocab/<field>.json``)."""
        path = self.path / "vocab" / f"{field}.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DataError("missing vocabulary file", path=path) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"corrupt vocabulary file ({exc})", path=path) from exc
        return data

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}={v}" for k, v in self.meta["splits"].items())
        return f"EncodedDataset({str(self.path)!r}, {rows})"


def open_dataset(path: str | Path | None = None, *, task: str = "binary") -> EncodedDataset:
    """An encoded dataset directory, or (``path=None``) the embedded MovieLens sample prepared
    for ``task`` ("binary" or "multiclass") on first use.

    >>> ds = open_dataset(task="binary")                     # doctest: +SKIP
    >>> ds.spec.num_classes, len(ds.split("train")) > 0      # doctest: +SKIP
    (2, True)
    """
    if path is None:
        from autoloss.data.embedded import default_dataset

        return EncodedDataset(default_dataset(task))
    return EncodedDataset(path)
