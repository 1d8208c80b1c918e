"""Data conditions: label noise and a lowered positive rate, applied to an encoded dataset.

One prepared dataset serves every condition: the conditions are applied after encoding, in
memory, when a run opens its data (``docs/data.md``, "Data conditions").

* ``label_noise`` (with ``noise_mode``): flips labels of the train split, and of the valid split
  unless ``noise_on_valid`` is False, with one vectorised draw per split. The draw comes from the
  run's seed (or ``noise_seed``) and the split's name, so every method of one seed sees the same
  flipped labels and a split's flips do not depend on the other splits.
* ``pos_rate``: keeps every negative and a uniform subset of the positives of every split
  (test included), so that each split's positive rate is ``pos_rate``. The subset defines the
  dataset of an experiment, so it does not depend on the run's seed: it is drawn from
  ``noise_seed`` if set, else from the fixed seed 0. Applied before the label noise.
* natural noise: a dataset that flags rows of its valid split as noisy (MovieLens
  ``--task implicit``: the rows of positives rated below the clean rating, which its test
  split does not have; :meth:`~autoloss.data.store.EncodedDataset.noisy_rows`) loses those
  rows when ``noise_on_valid`` is False, so that validation is as clean as the test. Applied
  first.

The test split's labels are never noisy. Rows are never copied: a subsampled split's ``x``,
``dense`` and ``bags`` are :class:`RowSubset` views of the memory maps (read lazily, a batch at
a time); only the labels of a changed split are an in-memory ``int32`` copy.

>>> ds = apply_conditions(EncodedDataset(path), Conditions(label_noise=0.2), seed=1)  # doctest: +SKIP
>>> ds.conditions_summary()["flips"]                                                   # doctest: +SKIP
{'train': 481, 'valid': 62}
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from autoloss.data.store import EncodedDataset, EncodedSplit
from autoloss.errors import ConfigError

NOISE_MODES = ("symmetric", "pos2neg", "neg2pos")
META_USES = ("policy", "train")
#: ``pos_rate`` is refused when the test split would keep fewer positives (an unstable AUC).
MIN_TEST_POSITIVES = 200
#: The seed of the positive subsample when ``noise_seed`` is not set (the same for every run).
SUBSAMPLE_SEED = 0
_NOISY_SPLITS = ("train", "valid")


@dataclass(frozen=True)
class Conditions:
    """The data conditions of a run (the ``data.*`` settings of the same names).

    Attributes:
        label_noise: probability of flipping a label, in [0, 1); 0 = off.
        noise_mode: ``symmetric`` (binary: flip; multi-class: a uniformly drawn other class),
            ``pos2neg`` (positives become 0: missed clicks) or ``neg2pos`` (negatives become 1:
            accidental clicks); the last two are binary only.
        noise_on_valid: also flip the valid split's labels (the test split's never are); False
            also drops the valid rows that the dataset flags as naturally noisy, if any.
        noise_seed: seed of the noise and of the positive subsample; None = the run's seed for
            the noise and :data:`SUBSAMPLE_SEED` for the subsample.
        pos_rate: the positive rate of every split after subsampling positives, in (0, 1);
            None = off. Binary only.
        meta_fraction: the share of the (conditioned) valid split moved to a ``meta`` split,
            seeded like the noise; 0 = off. Learnt policies update on ``meta``; early stopping
            and model selection use the rest (still called ``valid``).
        meta_use: ``policy`` (the default) or ``train``: the meta rows are appended to the
            train split instead (the ``[ce+meta]`` control: the same clean rows as training
            data); then there is no ``meta`` split.
    """

    label_noise: float = 0.0
    noise_mode: str = "symmetric"
    noise_on_valid: bool = True
    noise_seed: int | None = None
    pos_rate: float | None = None
    meta_fraction: float = 0.0
    meta_use: str = "policy"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.meta_fraction) and 0 <= self.meta_fraction < 1):
            raise ConfigError(f"data.meta_fraction must be in [0, 1), got {self.meta_fraction!r}")
        if self.meta_use not in META_USES:
            raise ConfigError(
                f"data.meta_use must be one of {', '.join(META_USES)}, got {self.meta_use!r}"
            )
        if not (math.isfinite(self.label_noise) and 0 <= self.label_noise < 1):
            raise ConfigError(f"data.label_noise must be in [0, 1), got {self.label_noise!r}")
        if self.noise_mode not in NOISE_MODES:
            raise ConfigError(
                f"data.noise_mode must be one of {', '.join(NOISE_MODES)}, got {self.noise_mode!r}"
            )
        if self.pos_rate is not None and not (
            math.isfinite(self.pos_rate) and 0 < self.pos_rate < 1
        ):
            raise ConfigError(f"data.pos_rate must be in (0, 1), got {self.pos_rate!r}")

    @property
    def active(self) -> bool:
        """Whether any condition is on (otherwise the dataset is used as it is)."""
        return self.label_noise > 0 or self.pos_rate is not None or self.meta_fraction > 0


class _RowView:
    """A lazy view of rows: what :class:`~autoloss.data.batches.BatchIterator` does with a split's
    arrays (``len``, ``shape``, ``dtype``, ``nbytes``, slicing ``a[lo:hi]``, ``np.take(a, idx,
    axis=0)``, which numpy routes to :meth:`take`) reads only the rows asked for, through the
    subclass's :meth:`rows`; ``np.asarray(a)`` reads all of them."""

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype[Any]:
        raise NotImplementedError

    def rows(self, key: Any) -> np.ndarray:
        """The rows ``key`` (an int, a slice or an index array) of this view."""
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):  # rows first, then the other axes of what they give
            rows, rest = (key[0], key[1:]) if key else (slice(None), ())
            if isinstance(rows, int | np.integer):
                return self[rows][rest]
            return self[rows][(slice(None), *rest)]
        return np.asarray(self.rows(key))

    def take(
        self,
        indices: Any,
        axis: int | None = None,
        out: np.ndarray | None = None,
        mode: str = "raise",
    ) -> np.ndarray:
        if axis != 0:  # not used by BatchIterator: read everything and let numpy do it
            return np.take(np.asarray(self), indices, axis=axis, out=out, mode=mode)  # type: ignore[call-overload]
        got = self.rows(indices)
        if out is None:
            return got
        out[...] = got
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        arr = self.rows(slice(None))
        return arr if dtype is None else arr.astype(dtype)


class RowSubset(_RowView):
    """Rows ``index`` (sorted) of a memory-mapped array, read lazily with one ``np.take`` on it."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base = base
        self.index = np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.index.shape[0]), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.base.dtype

    def rows(self, key: Any) -> np.ndarray:
        return np.take(self.base, self.index[key], axis=0)

    def __repr__(self) -> str:
        return f"RowSubset({self.shape}, {self.dtype}, of {self.base.shape[0]} rows)"


class RowConcat(_RowView):
    """The rows of several arrays (or :class:`RowSubset` views) one after the other, read lazily
    (the ``[ce+meta]`` control's train split: the train rows, then the meta rows)."""

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        self.bounds = np.cumsum([0, *(len(p) for p in self.parts)])

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.bounds[-1]), *self.parts[0].shape[1:])

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(self.parts[0].dtype)

    def rows(self, key: Any) -> np.ndarray:
        idx = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        return self._gather(idx).reshape(*idx.shape, *self.shape[1:])

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} rows")
        out = np.empty((rows.size, *self.shape[1:]), dtype=self.dtype)
        part_of = np.searchsorted(self.bounds, rows, side="right") - 1
        for i, part in enumerate(self.parts):
            sel = np.flatnonzero(part_of == i)
            if sel.size:
                out[sel] = np.take(part, rows[sel] - self.bounds[i], axis=0)
        return out

    def __repr__(self) -> str:
        return f"RowConcat({self.shape}, {self.dtype}, of {len(self.parts)} parts)"


class ConditionedDataset(EncodedDataset):
    """An encoded dataset with data conditions applied: same interface as its base dataset.

    ``path``, ``vocab()`` and ``spec`` are the base dataset's; ``meta`` is a copy whose
    ``splits`` (rows) and ``positive_rate`` describe the conditioned splits and whose
    ``conditions`` is :meth:`conditions_summary`. ``split(name)`` returns an
    :class:`~autoloss.data.store.EncodedSplit` whose labels may be an in-memory copy and whose
    other arrays may be :class:`RowSubset` views (typed as arrays: they support what batches use).
    """

    def __init__(
        self,
        base: EncodedDataset,
        conditions: Conditions,
        splits: dict[str, EncodedSplit],
        summary: dict[str, Any],
        flipped: dict[str, np.ndarray] | None = None,
    ) -> None:
        # Deliberately not EncodedDataset.__init__: nothing is read from disk again.
        self._flipped = dict(flipped or {})
        self.base = base
        self.conditions = conditions
        self.path = base.path
        meta = copy.deepcopy(base.meta)
        meta["splits"] = {name: len(s) for name, s in splits.items()}
        if "positive_rate" in summary:
            meta["positive_rate"] = dict(summary["positive_rate"])
        meta["conditions"] = summary
        self.meta = meta
        self._splits = dict(splits)
        self._summary = summary

    @property
    def identity(self) -> str:  # type: ignore[override]
        """The prepared dataset's (conditions are settings, recorded with the run's config)."""
        return self.base.identity

    def conditions_summary(self) -> dict[str, Any]:
        """The realised conditions, for ``result.json`` (a copy)."""
        return copy.deepcopy(self._summary)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def flipped(self, split: str) -> np.ndarray | None:
        """Which rows of ``split`` had their label flipped by the label noise (None: none)."""
        return self._flipped.get(split)

    def __repr__(self) -> str:
        rows = ", ".join(f"{k}={v}" for k, v in self.meta["splits"].items())
        return f"ConditionedDataset({str(self.path)!r}, {rows}, {self.conditions})"


def apply_conditions(dataset: EncodedDataset, conditions: Conditions, seed: int) -> EncodedDataset:
    """``dataset`` with ``conditions`` applied; ``dataset`` itself when no condition is on.

    ``seed`` is the run's seed (``train.seed``): the label noise is drawn from it unless
    ``conditions.noise_seed`` is set. Raises :class:`ConfigError` for a condition the data cannot
    meet (a mode or ``pos_rate`` on a multi-class task, a ``pos_rate`` above a split's natural
    rate, or one that leaves fewer than :data:`MIN_TEST_POSITIVES` test positives).
    """
    clean_valid = not conditions.noise_on_valid and "valid" in dataset.split_names
    noisy_valid = dataset.noisy_rows("valid") if clean_valid else None
    if not conditions.active and noisy_valid is None:
        return dataset
    spec = dataset.spec
    multiclass = spec.task != "binary"
    if multiclass and conditions.label_noise > 0 and conditions.noise_mode != "symmetric":
        raise ConfigError(
            f"data.noise_mode={conditions.noise_mode} is for binary tasks; this dataset is "
            f"{spec.task} with {spec.num_classes} classes (use data.noise_mode=symmetric)"
        )
    if multiclass and conditions.pos_rate is not None:
        raise ConfigError(
            f"data.pos_rate is for binary tasks; this dataset is {spec.task} "
            f"with {spec.num_classes} classes"
        )
    noise_seed = seed if conditions.noise_seed is None else conditions.noise_seed
    subsample_seed = SUBSAMPLE_SEED if conditions.noise_seed is None else conditions.noise_seed

    splits: dict[str, EncodedSplit] = {}
    rows: dict[str, int] = {}
    flips: dict[str, int] = {}
    flipped: dict[str, np.ndarray] = {}
    subsampled_rate: dict[str, float] = {}
    dropped: dict[str, dict[str, int]] = {}
    for name in dataset.split_names:
        split = dataset.split(name)
        y = np.asarray(split.y)
        index: np.ndarray | None = None
        changed = False
        if name == "valid" and noisy_valid is not None:
            index = np.flatnonzero(~noisy_valid)
            dropped[name] = {
                "rows": int(noisy_valid.sum()),
                "positives": int(np.count_nonzero(y[noisy_valid] == 1)),
            }
            y = y[index]
            changed = True
        if conditions.pos_rate is not None:
            rng = _rng("pos_rate", subsample_seed, name)
            kept = _subsample_positives(y, conditions.pos_rate, rng, name)
            index = kept if index is None else index[kept]
            y = y[kept]
            changed = True
            subsampled_rate[name] = _rate(y)
        if conditions.label_noise > 0 and (
            name == "train" or (name == "valid" and conditions.noise_on_valid)
        ):
            rng = _rng("label_noise", noise_seed, name)
            noisy = _flip(y, conditions.label_noise, conditions.noise_mode, spec.num_classes, rng)
            flipped[name] = noisy != y
            flips[name] = int(np.count_nonzero(flipped[name]))
            y, changed = noisy, True
        splits[name] = _split(split, y, index) if changed else split
        rows[name] = len(splits[name])

    if conditions.meta_fraction > 0:
        meta = _split_meta(splits, flipped, conditions, noise_seed)
        rows = {name: len(split) for name, split in splits.items()}
    summary: dict[str, Any] = {"rows": rows}
    if conditions.meta_fraction > 0:
        summary["meta"] = meta
    if not multiclass:
        summary["positive_rate"] = {n: _rate(np.asarray(s.y)) for n, s in splits.items()}
    if conditions.label_noise > 0:
        summary.update(
            label_noise=conditions.label_noise,
            noise_mode=conditions.noise_mode,
            noise_on_valid=conditions.noise_on_valid,
            noise_seed=noise_seed,
            flips=flips,
        )
    original_rows = {n: int(dataset.meta["splits"][n]) for n in dataset.split_names}
    if conditions.pos_rate is not None:
        summary.update(
            pos_rate=conditions.pos_rate,
            subsample_seed=subsample_seed,
            original_rows=original_rows,
            subsampled_positive_rate=subsampled_rate,
        )
    if dropped:
        summary.update(noise_on_valid=False, noisy_dropped=dropped, original_rows=original_rows)
    return ConditionedDataset(dataset, conditions, splits, summary, flipped)


def _split_meta(
    splits: dict[str, EncodedSplit],
    flipped: dict[str, np.ndarray],
    conditions: Conditions,
    seed: int,
) -> dict[str, Any]:
    """Move a seeded ``meta_fraction`` of the valid rows to a ``meta`` split (or, with
    ``meta_use=train``, to the end of the train split), in place; returns the summary."""
    if "valid" not in splits:
        raise ConfigError("data.meta_fraction needs a valid split to divide")
    valid = splits["valid"]
    n = len(valid)
    k = round(conditions.meta_fraction * n)
    if not 1 <= k < n:
        raise ConfigError(
            f"data.meta_fraction={conditions.meta_fraction:g} of {n} valid rows leaves no "
            "meta or no selection rows"
        )
    order = _rng("meta", seed, "valid").permutation(n)
    meta_rows, kept = np.sort(order[:k]), np.sort(order[k:])
    meta = _take_rows(valid, meta_rows, "meta")
    splits["valid"] = _take_rows(valid, kept, "valid")
    if "valid" in flipped:
        flipped["meta"], flipped["valid"] = flipped["valid"][meta_rows], flipped["valid"][kept]
    if conditions.meta_use == "train":
        n_train = len(splits["train"])
        splits["train"] = _concat_rows(splits["train"], meta)
        if flipped:
            flipped["train"] = np.concatenate(
                [
                    flipped.get("train", np.zeros(n_train, bool)),
                    flipped.pop("meta", np.zeros(k, bool)),
                ]
            )
    else:
        ordered = {}
        for name, split in splits.items():  # train, valid, meta, test
            ordered[name] = split
            if name == "valid":
                ordered["meta"] = meta
        splits.clear()
        splits.update(ordered)
    return {
        "fraction": conditions.meta_fraction,
        "use": conditions.meta_use,
        "rows": k,
        "seed": seed,
    }


def _take_rows(split: EncodedSplit, index: np.ndarray, name: str) -> EncodedSplit:
    """Rows ``index`` (sorted) of ``split``, as views, under the split name ``name``."""

    def rows(a: Any) -> Any:
        if a is None:
            return None
        if isinstance(a, RowSubset):
            return RowSubset(a.base, a.index[index])
        return RowSubset(a, index)

    y = np.ascontiguousarray(np.asarray(split.y)[index], dtype=np.int32)
    y.setflags(write=False)
    return EncodedSplit(name, rows(split.x), y, rows(split.dense), rows(split.bags))


def _concat_rows(first: EncodedSplit, second: EncodedSplit) -> EncodedSplit:
    """``first``'s rows, then ``second``'s, under ``first``'s name (lazy views)."""

    def both(a: Any, b: Any) -> Any:
        return None if a is None else RowConcat([a, b])

    y = np.concatenate([np.asarray(first.y), np.asarray(second.y)]).astype(np.int32)
    y.setflags(write=False)
    return EncodedSplit(
        first.name, both(first.x, second.x), y, both(first.dense, second.dense),
        both(first.bags, second.bags),
    )  # fmt: skip


def _rng(purpose: str, seed: int, split: str) -> np.random.Generator:
    """An independent generator per (purpose, seed, split name): stable across versions of the
    other splits, of the dataset's size and of the other conditions."""
    entropy = [zlib.crc32(purpose.encode()), int(seed) % 2**64, zlib.crc32(split.encode())]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def _rate(y: np.ndarray) -> float:
    return round(float(np.count_nonzero(y == 1)) / max(len(y), 1), 6)


def _subsample_positives(
    y: np.ndarray, pos_rate: float, rng: np.random.Generator, split: str
) -> np.ndarray:
    """Sorted row numbers: every negative and ``round(R / (1 - R) * negatives)`` positives."""
    positives = np.flatnonzero(y == 1)
    negatives = len(y) - len(positives)
    keep = round(pos_rate / (1 - pos_rate) * negatives)
    if keep > len(positives):
        natural = len(positives) / max(len(y), 1)
        raise ConfigError(
            f"data.pos_rate={pos_rate:g} is above the {split} split's natural positive rate "
            f"({natural:.4f}): positives can only be subsampled"
        )
    if split == "test" and keep < MIN_TEST_POSITIVES:
        raise ConfigError(
            f"data.pos_rate={pos_rate:g} would leave {keep} positives in the test split "
            f"(at least {MIN_TEST_POSITIVES} are needed): use a higher rate"
        )
    if keep < 1:
        raise ConfigError(
            f"data.pos_rate={pos_rate:g} would leave no positives in the {split} split "
            f"({negatives} negatives): use a higher rate"
        )
    chosen = rng.choice(positives, size=keep, replace=False)
    keep_mask = y != 1
    keep_mask[chosen] = True
    return np.flatnonzero(keep_mask)


def _flip(
    y: np.ndarray, rate: float, mode: str, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Noisy int32 labels: each row is hit with probability ``rate`` (one vectorised draw)."""
    hit = rng.random(len(y)) < rate
    if num_classes > 2:  # symmetric: a uniformly drawn other class
        shift = rng.integers(1, num_classes, size=len(y))
        return np.where(hit, (y + shift) % num_classes, y).astype(np.int32)
    if mode == "pos2neg":
        hit &= y == 1
    elif mode == "neg2pos":
        hit &= y == 0
    return np.where(hit, 1 - y, y).astype(np.int32)


def _split(split: EncodedSplit, y: np.ndarray, index: np.ndarray | None) -> EncodedSplit:
    """The conditioned split: labels ``y`` (read-only), rows ``index`` of the others (or all)."""
    y = np.ascontiguousarray(y, dtype=np.int32)
    y.setflags(write=False)

    def rows(a: np.ndarray | None) -> np.ndarray | None:
        if a is None or index is None:
            return a
        return cast(np.ndarray, RowSubset(a, index))

    x = rows(split.x)
    assert x is not None
    return EncodedSplit(split.name, x, y, rows(split.dense), rows(split.bags))
