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
from autoloss.files import verify_recorded

#: The layout of an encoded dataset directory (``meta.json`` ``format_version``; docs/formats.md).
FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")


def check_format_version(
    meta: dict[str, Any], meta_path: Path, hint: str = "prepare the data again"
) -> None:
    """One :class:`DataError` line unless ``meta`` (a dataset's, or the copy in a run
    directory) has the ``format_version`` this version reads."""
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"unsupported format_version {meta.get('format_version')!r} "
            f"(this autoloss reads {FORMAT_VERSION}); {hint}",
            path=meta_path,
        )


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
        check_format_version(meta, meta_path)
        self.meta: dict[str, Any] = meta
        self._splits: dict[str, EncodedSplit] = {}

    @cached_property
    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_meta(self.meta)

    @cached_property
    def identity(self) -> str:
        """What this dataset holds, as read when it was opened (:func:`meta_identity`)."""
        return meta_identity(self.meta)

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
            digested = self.check_digests(name)
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
            split = EncodedSplit(name, x, y, dense, bags)
            if not digested:  # arrays equal to what prepare wrote hold only ids in range
                check_ids(split, spec, d)
            self._splits[name] = split
        return self._splits[name]

    def check_digests(self, split: str) -> bool:
        """DataError naming the file when an array of ``split`` differs from the SHA-256 that
        meta.json recorded when the dataset was prepared (``digests``; a dataset prepared by an
        older version records none and is read unchecked). Each file is hashed once per process
        (:func:`autoloss.files.file_sha256`). True when the split's arrays were verified."""
        recorded = self.meta.get("digests")
        if not isinstance(recorded, dict):
            return False
        mine = [rel for rel in sorted(recorded) if rel.startswith(f"{split}/")]
        for rel in mine:
            verify_recorded(
                self.path / rel,
                recorded[rel],
                rel,
                "prepare the dataset again (autoloss prepare ... --overwrite)",
                DataError,
            )
        return {f"{split}/x.npy", f"{split}/y.npy"} <= set(mine)

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


#: Rows read at a time by :func:`check_ids` (bounded memory on data larger than RAM).
_CHECK_ROWS = 1 << 20


def check_ids(split: EncodedSplit, spec: FeatureSpec, where: Path) -> None:
    """DataError unless every id of ``split`` lies within its field's vocabulary (bags: or the
    padding -1) and every label within the classes: an id out of range would read another
    field's embedding row (shared table) or fail deep inside the model. One pass in blocks."""
    arrays = [
        ("x.npy", split.x, 0, np.asarray(spec.cat_vocab, dtype=np.int64)),
        ("y.npy", split.y, 0, np.asarray([spec.num_classes], dtype=np.int64)),
    ]
    if split.bags is not None:
        arrays.append(("bags.npy", split.bags, -1, np.asarray(spec.bag_vocab, dtype=np.int64)))
    for start in range(0, len(split), _CHECK_ROWS):
        for fname, arr, low, top in arrays:
            block = np.asarray(arr[start : start + _CHECK_ROWS])
            lo, hi = _column_range(block)
            bad = np.flatnonzero((lo < low) | (hi >= top))
            if bad.size:
                j = int(bad[0])
                raise DataError(
                    f"corrupt array: values {lo[j]}..{hi[j]} in column {j} of rows "
                    f"{start}..{start + len(block) - 1}, outside {low}..{top[j] - 1} "
                    "(its vocabulary); prepare the data again",
                    path=where / fname,
                )


def _column_range(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column (axis 1; a 1-d array is one column): the least and greatest value."""
    cols = block.reshape(len(block), 1) if block.ndim == 1 else block
    axes = tuple(i for i in range(cols.ndim) if i != 1)
    return cols.min(axis=axes).astype(np.int64), cols.max(axis=axes).astype(np.int64)


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


def check_trainable(dataset: Any, ranks: int = 1) -> list[str]:
    """Refuse data a run cannot train on (DataError naming the split): an empty split, or fewer
    training rows than processes; return warnings for data it can train on but not measure
    well (a split with one class only: its AUC is undefined)."""
    warnings = []
    for name in dataset.split_names:
        split = dataset.split(name)
        need = ranks if name == "train" else 1
        if len(split) < need:
            per = f", fewer than the {ranks} processes of --nproc" if need > 1 else ""
            raise DataError(
                f"the {name} split holds {len(split)} row(s){per}: a run needs more "
                "(more data, or another prepare --split)",
                path=dataset.path,
            )
        classes = np.flatnonzero(np.bincount(np.asarray(split.y)))
        if len(classes) < 2:
            what = {
                "train": "the model can learn nothing but that label",
                "valid": "its AUC is undefined (nan): select by logloss "
                "(--set train.select_by=logloss)",
            }.get(name, "its AUC is undefined (reported as nan)")
            warnings.append(
                f"the {name} split has one class only (every label {int(classes[0])}): {what}"
            )
    return warnings


#: meta.json keys that say when and how fast a dataset was prepared, not what it holds.
_CIRCUMSTANTIAL = frozenset({"created", "seconds", "autoloss_version"})


def meta_identity(meta: dict[str, Any]) -> str:
    """A digest of what a dataset holds, from its meta.json (inputs with their SHA-256, splits,
    vocabularies' sizes, class counts, ...; not when it was prepared): a dataset prepared again
    from other inputs or with other options has another identity. A resumed run compares it
    with the one its checkpoint recorded."""
    import hashlib

    kept = {k: v for k, v in meta.items() if k not in _CIRCUMSTANTIAL}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
