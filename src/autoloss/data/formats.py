"""One schema per raw format: which columns are read and how a chunk becomes fields.

A format turns a chunk of raw binary columns into a :class:`ChunkData`: labels, categorical
*tokens* (to be counted and encoded by :mod:`autoloss.data.vocab`), raw numbers (dense or
quantile-bucketed fields), multi-valued bags, and the :class:`~autoloss.data.columns.Problem`
rows found on the way. All of it vectorised; see ``docs/data.md`` for the protocols.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from autoloss import yamlfile
from autoloss.data.columns import (
    Problem,
    bucket,
    categorical_tokens,
    contiguous,
    int_tokens,
    null_mask,
    to_float,
    to_int,
    to_text,
)
from autoloss.data.readers import (
    BadRows,
    Layout,
    check_file,
    excerpt,
    is_parquet,
    iter_chunks,
    one_line,
    printable,
    read_head,
    read_prefix,
)
from autoloss.errors import ConfigError, DataError, SchemaError

TASKS = ("binary", "multiclass")
# A dense (standardised) value must be below this in magnitude: its square must be finite.
DENSE_LIMIT = 1e150
_DENSE_TOO_LARGE = f"number too large for a dense field (over {DENSE_LIMIT:g} in magnitude)"
BUCKETINGS = ("ln2", "log2", "none")


@dataclass(frozen=True)
class FieldDef:
    """One output field.

    ``kind`` is ``categorical`` (a column of ``x``), ``dense`` (a column of ``dense``) or
    ``multivalue`` (a bag in ``bags``). ``bucketing`` is set for numeric sources: ``ln2``,
    ``log2``, ``quantile:N`` (all categorical) or ``none`` (dense).
    """

    name: str
    kind: str
    source: str = "categorical"
    bucketing: str | None = None
    separator: str | None = None
    min_count: int = 1

    @property
    def quantiles(self) -> int | None:
        if self.bucketing and self.bucketing.startswith("quantile:"):
            return int(self.bucketing.split(":", 1)[1])
        return None

    @property
    def from_numbers(self) -> bool:
        """Carried as raw numbers through the pass (dense or quantile-bucketed)."""
        return self.kind == "dense" or self.quantiles is not None


@dataclass
class ChunkData:
    """One chunk after the format's conversion (``n`` rows)."""

    n: int
    y: np.ndarray | None
    tokens: dict[str, pa.Array] = field(default_factory=dict)
    numbers: dict[str, np.ndarray] = field(default_factory=dict)
    bags: dict[str, pa.Array] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    time: np.ndarray | None = None  # float64 row times (the format's time column, when read)

    def select(self, keep: np.ndarray) -> ChunkData:
        mask = pa.array(keep)
        return ChunkData(
            n=int(keep.sum()),
            y=None if self.y is None else self.y[keep],
            tokens={k: v.filter(mask) for k, v in self.tokens.items()},
            numbers={k: v[keep] for k, v in self.numbers.items()},
            bags={k: v.filter(mask) for k, v in self.bags.items()},
            time=None if self.time is None else self.time[keep],
        )


def parse_min_count(value: Any, where: str) -> int | dict[str, int]:
    """An int, or a mapping column -> int (from a schema file or --min-count)."""
    if isinstance(value, bool):
        raise ConfigError(f"min_count must be an integer, got {_shown(value)}", column=where)
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"min_count must be >= 1, got {value}", column=where)
        return value
    if isinstance(value, dict):
        return {str(k): int(parse_min_count(v, where)) for k, v in value.items()}  # type: ignore[arg-type]
    raise ConfigError(
        f"min_count must be an integer or a mapping, got {_shown(value)}", column=where
    )


@dataclass(frozen=True)
class BoundInput:
    """What binding one input file to a format gives its reader (:meth:`RawFormat.bind_input`)."""

    path: Path
    layout: Layout  # how to parse the file
    columns: tuple[str, ...]  # the raw columns to read, in this order


class RawFormat:
    """Base class: subclasses set ``name``, ``label``, ``default_min_count`` and implement
    :meth:`layout`, :meth:`bind` and :meth:`convert`.

    A format object is configured by its constructor, then bound to each input file in turn
    (the first file first) and only then converts that file's chunks. Two steps change it, and
    only in these attributes, which :meth:`convert` (and :meth:`layout`) then read:

    * :meth:`bind` sets ``fields`` (every format), and what the first file fixes for the later
      ones: Avazu's feature columns (``fields``), Frappe's columns (``schema``), MovieLens' movies
      file found beside the ratings (``movies_path``); Criteo remembers (``_names``) that a file
      to encode has no label column, and :meth:`layout` then gives the label-less names.
    * :meth:`load_side_data` reads side files before the pass (MovieLens: ``_movies``; the
      encoder of a prepared dataset gives it the saved side tables instead, :meth:`use_side_tables`).

    :meth:`bind_input` returns what binding gives the reader of the file (layout and columns);
    :meth:`side_tables` is what a prepared dataset keeps of the side data.

    A format with a ``time_column`` (MovieLens ``timestamp``, a csv schema's ``time``) can be
    split by time: after :meth:`enable_time` it also reads that column and :meth:`transform`
    gives each row's time (``ChunkData.time``; a missing or non-numeric time is a bad row).
    """

    name = ""
    label = "label"
    default_min_count = 1
    accepts_parquet = False  # Parquet input: csv and frappe only (docs/data.md, "Parquet input")
    time_column: str | None = None  # the column that orders rows in time (--split temporal)

    def __init__(self, task: str = "binary", min_count: int | dict[str, int] | None = None):
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r} (binary or multiclass)", column="--task")
        self.task = task
        self.num_classes = 2
        self.min_count = min_count
        self.fields: list[FieldDef] = []
        self.use_time = False  # read the time column (enable_time)

    # --- to override -------------------------------------------------------------------------
    def layout(self, path: Path) -> Layout:
        raise NotImplementedError

    def bind(self, path: Path, names: list[str], *, need_label: bool) -> list[str]:
        """Check the columns ``names`` of ``path``; set ``self.fields`` (and what the first file
        fixes, see the class docstring); return the columns to read."""
        raise NotImplementedError

    def convert(self, batch: pa.RecordBatch, data: ChunkData) -> None:
        """Fill ``data`` (labels already done) from one chunk."""
        raise NotImplementedError

    def parameters(self) -> dict[str, Any]:
        """Format-specific protocol parameters for meta.json (enough to rebuild the format)."""
        return {}

    def side_inputs(self) -> list[Path]:
        """Extra files the encoding depends on (checksummed in meta.json)."""
        return []

    def side_tables(self) -> dict[str, pa.Table]:
        """Tables that encoding new rows needs besides the vocabularies, by name (a prepared
        dataset keeps them as ``side/<name>.parquet``); filled by :meth:`load_side_data`."""
        return {}

    def use_side_tables(self, saved: dict[str, Path]) -> None:
        """Use the side tables a prepared dataset saved (``name -> parquet path``; the counterpart
        of :meth:`side_tables`): ``predict`` encodes new rows with them, not the original files."""

    def load_side_data(self, skip_bad: bool, bad: BadRows) -> None:
        """Read side files (MovieLens movies) before the pass."""

    # --- shared ------------------------------------------------------------------------------
    def enable_time(self) -> None:
        """Read the time column too (``--split temporal``); ConfigError when there is none."""
        if self.time_column is None:
            fix = (
                "add 'time: COLUMN' to the schema"
                if isinstance(self, CsvFormat) and not isinstance(self, FrappeFormat)
                else "use --format csv with 'time: COLUMN' in the schema"
            )
            raise ConfigError(
                f"--split temporal needs a time column; --format {self.name} has none ({fix})",
                column="--split",
            )
        self.use_time = True

    def bind_input(self, path: Path, names: list[str], *, need_label: bool) -> BoundInput:
        """:meth:`bind` ``path`` (header ``names``) and say how to read it."""
        columns = self.bind(path, names, need_label=need_label)
        if self.use_time and self.time_column is not None:
            if self.time_column not in names:
                raise DataError(
                    f"time column {excerpt(self.time_column, 40)} (--split temporal) is absent "
                    f"(found {_show_names(names)})",
                    path=path,
                    column=printable(self.time_column),
                )
            if self.time_column not in columns:
                columns = [*columns, self.time_column]
        for c in columns:
            if names.count(c) > 1:
                raise DataError(
                    f"column {excerpt(c, 40)} appears {names.count(c)} times in the header",
                    path=path,
                    line=1,
                    column=printable(c),
                )
        return BoundInput(path, self.layout(path), tuple(columns))

    def check_input(self, path: Path) -> None:
        """ConfigError for an input this format cannot read (Parquet for text-only formats)."""
        if is_parquet(path) and not self.accepts_parquet:
            raise ConfigError(
                f"--format {self.name} reads text files; Parquet input is for csv and frappe",
                column="--input",
            )

    def field_min_count(self, name: str) -> int:
        mc = self.min_count
        if isinstance(mc, dict):
            return int(mc.get(name, self.default_min_count))
        return int(mc) if mc is not None else self.default_min_count

    def transform(self, batch: pa.RecordBatch, *, has_label: bool) -> ChunkData:
        data = ChunkData(n=batch.num_rows, y=None)
        if has_label:
            data.y = self.labels(batch.column(self.label), data.problems)
        self.convert(batch, data)
        if self.use_time and self.time_column is not None:
            data.time = self.times(batch.column(self.time_column), data.problems)
        return data

    def times(self, arr: pa.Array, problems: list[Problem]) -> np.ndarray:
        """Row times: numbers (e.g. Unix seconds); missing or non-numeric ones are bad rows."""
        name = self.time_column or "time"
        v, nulls = to_float(arr, name, problems)
        problems.append(Problem("missing time", name, nulls))
        return v

    def labels(self, arr: pa.Array, problems: list[Problem]) -> np.ndarray:
        """Integer labels: 0/1 for binary, 0..C-1 for multiclass."""
        missing = null_mask(arr)
        v, nulls = to_float(arr, self.label, problems)
        problems.append(Problem("missing label", self.label, missing))
        valid = (v >= 0) & (v == np.floor(v))
        if self.task == "binary":
            valid &= v <= 1
            reason = "label is not 0 or 1"
        else:
            valid &= v < self.num_classes
            reason = f"label is not a class in 0..{self.num_classes - 1}"
        problems.append(Problem(reason, self.label, ~valid & ~nulls))
        return np.where(valid & ~nulls, v, 0).astype(np.int32)


def combined(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """A record batch with contiguous columns (a chunk's table has chunked ones)."""
    if isinstance(batch, pa.RecordBatch):
        return batch
    return pa.RecordBatch.from_arrays(
        [contiguous(c) for c in batch.columns], names=batch.column_names
    )


def _categorical_tokens(batch: pa.RecordBatch, name: str, problems: list[Problem]) -> pa.Array:
    return categorical_tokens(batch.column(name), name, problems)


def _missing_columns(want: list[str], names: list[str], path: Path, error=DataError) -> None:  # type: ignore[no-untyped-def]
    for c in want:
        if c not in names:
            raise error(
                f"column {excerpt(c, 40)} is absent (found {_show_names(names)})",
                path=path,
                column=printable(c),
            )


def _show_names(names: list[str], most: int = 12) -> str:
    """Header names for a message: plain when short and printable, else escaped; the first few."""
    shown = [printable(n) for n in names[:most]]
    more = f", ... ({len(names)} columns)" if len(names) > most else ""
    return ", ".join(shown) + more


# ---------------------------------------------------------------------------------------------
class CriteoFormat(RawFormat):
    """Criteo Kaggle/Terabyte ``train.txt``: tab-separated, no header, label, I1-I13, C1-C26."""

    name = "criteo"
    default_min_count = 10
    INTS = tuple(f"I{i}" for i in range(1, 14))
    CATS = tuple(f"C{i}" for i in range(1, 27))
    NAMES = ("label", *INTS, *CATS)

    def __init__(self, task: str = "binary", min_count: int | dict[str, int] | None = None):
        if task != "binary":
            raise ConfigError("criteo is a binary task", column="--task")
        super().__init__(task, min_count)
        self._names = self.NAMES
        self._columns_text = ""

    def layout(self, path: Path) -> Layout:
        return Layout("\t", header=False, names=self._names, columns_text=self._columns_text)

    def bind(self, path: Path, names: list[str], *, need_label: bool) -> list[str]:
        if not need_label:
            # A file to predict may come without the label column: tell by the column count.
            first = _first_line(path)
            found = None if first is None else first.count(b"\t") + 1
            if found == len(self.NAMES) - 1:
                self._names = self.NAMES[1:]
                self._columns_text = f"{found} (as on the first line, without a label)"
            elif found == len(self.NAMES):
                self._columns_text = f"{found} (as on the first line, with a label)"
            else:
                self._columns_text = f"{len(self.NAMES) - 1} (without a label) or {len(self.NAMES)}"
        self.fields = [
            FieldDef(n, "categorical", "numeric", "ln2", min_count=self.field_min_count(n))
            for n in self.INTS
        ] + [FieldDef(n, "categorical", min_count=self.field_min_count(n)) for n in self.CATS]
        return list(self._names)

    def has_label_column(self) -> bool:
        return "label" in self._names

    def convert(self, batch: pa.RecordBatch, data: ChunkData) -> None:
        for n in self.INTS:
            v, nulls = to_int(batch.column(n), n, data.problems)
            data.tokens[n] = int_tokens(bucket(v, "ln2"), nulls)
        for n in self.CATS:
            data.tokens[n] = _categorical_tokens(batch, n, data.problems)


def _first_line(path: Path) -> bytes | None:
    head = read_prefix(path, 1 << 20)
    lines = [x for x in head.split(b"\n") if x.strip()]
    return lines[0].rstrip(b"\r") if lines else None


# ---------------------------------------------------------------------------------------------
class AvazuFormat(RawFormat):
    """Avazu ``train.csv``: ``id,click,hour,C1,banner_pos,...,C21`` with a header."""

    name = "avazu"
    label = "click"
    default_min_count = 4
    HOUR_FIELDS = ("hour", "weekday", "is_weekend")

    def layout(self, path: Path) -> Layout:
        return Layout(",", header=True)

    def bind(self, path: Path, names: list[str], *, need_label: bool) -> list[str]:
        _missing_columns(["hour", *(["click"] if need_label else [])], names, path)
        cats = [n for n in names if n not in ("id", "click", "hour")]
        if not self.fields:
            self.fields = [
                FieldDef(n, "categorical", "derived", min_count=self.field_min_count(n))
                for n in self.HOUR_FIELDS
            ] + [FieldDef(n, "categorical", min_count=self.field_min_count(n)) for n in cats]
        else:
            _missing_columns([f.name for f in self.fields if f.source != "derived"], names, path)
        read = ["hour", *[f.name for f in self.fields if f.source != "derived"]]
        return [*(["click"] if "click" in names else []), *read]

    def convert(self, batch: pa.RecordBatch, data: ChunkData) -> None:
        v, nulls = to_int(batch.column("hour"), "hour", data.problems)
        yy, mm, dd, hh = v // 1_000_000, v // 10_000 % 100, v // 100 % 100, v % 100
        ok = (v >= 0) & (mm >= 1) & (mm <= 12) & (dd >= 1) & (dd <= 31) & (hh <= 23)
        data.problems.append(Problem("hour is not YYMMDDHH", "hour", ~ok & ~nulls))
        months = ((2000 + np.where(ok, yy, 70) - 1970) * 12 + np.where(ok, mm, 1) - 1).astype(
            "datetime64[M]"
        )
        days = (months.astype("datetime64[D]") + np.where(ok, dd, 1) - 1).astype(np.int64)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        bad = nulls | ~ok
        data.tokens["hour"] = int_tokens(hh, bad)
        data.tokens["weekday"] = int_tokens(weekday, bad)
        data.tokens["is_weekend"] = int_tokens((weekday >= 5).astype(np.int64), bad)
        for f in self.fields:
            if f.source != "derived":
                data.tokens[f.name] = _categorical_tokens(batch, f.name, data.problems)


# ---------------------------------------------------------------------------------------------
@dataclass
class _Movies:
    ids: pa.Array  # string movieId
    genres: pa.Array  # list<string>
    year: pa.Array  # string (null when the title has no year)

    def table(self) -> pa.Table:
        return pa.table({"movieId": self.ids, "genres": self.genres, "year": self.year})


class MovieLensFormat(RawFormat):
    """MovieLens ``ratings.csv`` (ml-latest-small, ml-20m) or ml-1m ``ratings.dat``.

    Fields: userId, movieId, and with a ``movies`` file beside the ratings, ``year`` (from the
    title) and ``genres`` (multi-valued, ``|``). The timestamp is not a feature.
    """

    name = "movielens"
    label = "rating"
    default_min_count = 2
    time_column = "timestamp"
    DAT_NAMES = ("userId", "_a", "movieId", "_b", "rating", "_c", "timestamp")

    def __init__(
        self,
        task: str = "binary",
        min_count: int | dict[str, int] | None = None,
        movies: Path | None = None,
        use_movies: bool = True,
    ):
        super().__init__(task, min_count)
        self.num_classes = 2 if task == "binary" else 5
        self.movies_path = movies
        self.use_movies = use_movies
        self._movies: _Movies | None = None

    def layout(self, path: Path) -> Layout:
        if ".dat" in path.suffixes:
            # "::"-separated: split on ':' and ignore the empty columns in between.
            return Layout(":", header=False, names=self.DAT_NAMES)
        return Layout(",", header=True)

    def bind(self, path: Path, names: list[str], *, need_label: bool) -> list[str]:
        label = [self.label] if need_label else []
        _missing_columns(["userId", "movieId", *label], names, path)
        if self.use_movies and self.movies_path is None:
            self.movies_path = _beside(path, "movies")
        self.fields = [
            FieldDef("userId", "categorical", min_count=self.field_min_count("userId")),
            FieldDef("movieId", "categorical", min_count=self.field_min_count("movieId")),
        ]
        if self.use_movies and self.movies_path is not None:
            self.fields += [
                FieldDef("year", "categorical", "derived", min_count=self.field_min_count("year")),
                FieldDef(
                    "genres",
                    "multivalue",
                    separator="|",
                    min_count=self.field_min_count("genres"),
                ),
            ]
        return ["userId", "movieId", *([self.label] if self.label in names else [])]

    def side_inputs(self) -> list[Path]:
        return [self.movies_path] if self.use_movies and self.movies_path else []

    def side_tables(self) -> dict[str, pa.Table]:
        return {} if self._movies is None else {"movies": self._movies.table()}

    def use_side_tables(self, saved: dict[str, Path]) -> None:
        path = saved.get("movies")
        self.use_movies = path is not None
        if path is not None:
            try:
                t = pq.read_table(path)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"cannot read the dataset's side table ({one_line(exc)})", path=path
                ) from None
            self.movies_path = path
            self._movies = _Movies(
                t.column("movieId").combine_chunks(),
                t.column("genres").combine_chunks(),
                t.column("year").combine_chunks(),
            )

    def parameters(self) -> dict[str, Any]:
        return {
            "movies": str(self.movies_path) if self.movies_path and self.use_movies else None,
            "label_rule": "rating >= 4"
            if self.task == "binary"
            else "ceil(rating) - 1 (half stars rounded up)",
        }

    def load_side_data(self, skip_bad: bool, bad: BadRows) -> None:
        if not self.use_movies or self.movies_path is None or self._movies is not None:
            return
        path = self.movies_path
        dat = ".dat" in path.suffixes
        if dat:
            # ml-1m movies.dat: latin-1, "::" with ':' inside titles, so read whole lines.
            layout = Layout("\x1f", header=False, names=("line",), encoding="latin-1")
        else:
            layout = Layout(",", header=True)
        names, _ = read_head(path, layout)
        if not dat:
            _missing_columns(["movieId", "title", "genres"], names, path)
        parts = []
        for chunk in iter_chunks(
            path, layout, list(names), chunk_rows=1 << 20, skip_bad=skip_bad, bad=bad
        ):
            problems: list[Problem] = []
            b = combined(chunk.batch)
            if dat:
                split = pc.split_pattern(to_text(b.column("line"), "line", problems), "::", 2)
                ids = pc.list_element(split, 0)
                title = pc.list_element(split, 1)
                genres = pc.list_element(split, 2)
            else:
                ids = to_text(b.column("movieId"), "movieId", problems)
                title = to_text(b.column("title"), "title", problems)
                genres = to_text(b.column("genres"), "genres", problems)
            year = pc.struct_field(pc.extract_regex(title, r"\((?P<y>\d{4})\)\s*$"), [0])
            parts.append((ids, pc.split_pattern(genres, "|"), year))
        self._movies = _Movies(
            pa.concat_arrays([p[0] for p in parts]),
            pa.concat_arrays([p[1] for p in parts]),
            pa.concat_arrays([p[2] for p in parts]),
        )

    def labels(self, arr: pa.Array, problems: list[Problem]) -> np.ndarray:
        missing = null_mask(arr)
        r, nulls = to_float(arr, "rating", problems)
        problems.append(Problem("missing rating", "rating", missing))
        ok = (r > 0) & (r <= 5)
        problems.append(Problem("rating is not in (0, 5]", "rating", ~ok & ~nulls))
        # Binary: rating >= 4. Five classes: half stars rounded up (0.5 -> 1, 4.5 -> 5), minus 1.
        y = r >= 4 if self.task == "binary" else np.ceil(np.where(ok, r, 1)) - 1
        return np.where(ok, y, 0).astype(np.int32)

    def convert(self, batch: pa.RecordBatch, data: ChunkData) -> None:
        batch = combined(batch)
        # Ids must be integers (validated), but they are tokens: keep their text.
        to_int(batch.column("userId"), "userId", data.problems)
        to_int(batch.column("movieId"), "movieId", data.problems)
        data.tokens["userId"] = to_text(batch.column("userId"), "userId", [])
        movie_text = to_text(batch.column("movieId"), "movieId", [])
        data.tokens["movieId"] = movie_text
        if self._movies is not None and any(f.name == "genres" for f in self.fields):
            row = pc.index_in(movie_text, value_set=self._movies.ids)
            data.tokens["year"] = self._movies.year.take(row)
            data.bags["genres"] = self._movies.genres.take(row)


class ImplicitMovieLensFormat(MovieLensFormat):
    """The rows of the implicit-feedback protocol (:mod:`autoloss.data.implicit`): ``userId``,
    ``movieId`` and a 0/1 ``label`` (1: a rating, 0: a sampled movie the user never rated),
    encoded like any MovieLens rows (year and genres from the movies file of the ratings)."""

    label = "label"

    def __init__(
        self,
        min_count: int | dict[str, int] | None = None,
        movies: Path | None = None,
    ):
        super().__init__("binary", min_count, movies, use_movies=movies is not None)

    def labels(self, arr: pa.Array, problems: list[Problem]) -> np.ndarray:
        return RawFormat.labels(self, arr, problems)

    def parameters(self) -> dict[str, Any]:
        rule = "implicit: every rating 1, a sampled movie the user never rated 0"
        return {**super().parameters(), "label_rule": rule}


def _beside(path: Path, stem: str) -> Path | None:
    """``movies.csv``/``movies.dat`` (any compression) in the directory of ``path``."""
    ext = ".dat" if ".dat" in path.suffixes else ".csv"
    for suffix in ("", ".gz", ".bz2", ".zst"):
        cand = path.parent / f"{stem}{ext}{suffix}"
        if cand.is_file():
            return cand
    return None


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvSchema:
    """A parsed ``csv`` schema file (docs/data.md, "csv schema")."""

    label: str
    task: str = "binary"
    categorical: tuple[str, ...] = ()
    numeric: tuple[tuple[str, str], ...] = ()
    multivalue: tuple[tuple[str, str], ...] = ()
    min_count: int | dict[str, int] = 1
    num_classes: int | None = None
    delimiter: str = ","
    time: str | None = None  # the time column of --split temporal (may also be a feature)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "label": self.label,
            "task": self.task,
            "categorical": list(self.categorical),
            "numeric": dict(self.numeric),
            "multivalue": dict(self.multivalue),
            "min_count": self.min_count,
            "num_classes": self.num_classes,
            "delimiter": self.delimiter,
        }
        return out if self.time is None else {**out, "time": self.time}

    @classmethod
    def from_dict(cls, raw: Any, where: str | Path = "schema") -> CsvSchema:
        def fail(msg: str) -> SchemaError:
            return SchemaError(msg, path=where)

        if not isinstance(raw, dict):
            raise fail("a schema must be a mapping with at least 'label'")
        unknown = set(raw) - {
            "label",
            "task",
            "categorical",
            "numeric",
            "multivalue",
            "min_count",
            "num_classes",
            "delimiter",
            "time",
        }
        if unknown:
            raise fail(f"unknown schema keys: {', '.join(sorted(_shown(k) for k in unknown))}")
        if not isinstance(raw.get("label"), str):
            raise fail("'label' (the label column) is required")
        task = raw.get("task", "binary")
        if task not in TASKS:
            raise fail(f"task must be binary or multiclass, got {_shown(task)}")
        cats = raw.get("categorical") or []
        if not isinstance(cats, list) or not all(_is_name(c) for c in cats):
            raise fail("'categorical' must be a list of column names")
        numeric = raw.get("numeric") or {}
        if isinstance(numeric, list) and all(_is_name(c) for c in numeric):
            numeric = dict.fromkeys(numeric, "ln2")
        if not isinstance(numeric, dict) or not all(_is_name(c) for c in numeric):
            raise fail("'numeric' must map columns to a bucketing")
        for col, rule in numeric.items():
            rule = str(rule)
            if rule not in BUCKETINGS and not (
                rule.startswith("quantile:")
                and rule[9:].isdecimal()
                and rule[9:].isascii()
                and 2 <= int(rule[9:]) <= 1_000_000
            ):
                raise fail(
                    f"numeric {_shown(col)}: bucketing must be ln2, log2, quantile:N "
                    "(N from 2 to 1000000) or none"
                )
        multi = raw.get("multivalue") or {}
        if (
            not isinstance(multi, dict)
            or not all(_is_name(c) for c in multi)
            or not all(isinstance(v, str) and v for v in multi.values())
        ):
            raise fail("'multivalue' must map columns to a separator string")
        try:
            min_count = parse_min_count(raw.get("min_count", 1), "min_count")
        except (ConfigError, TypeError, ValueError, OverflowError) as exc:
            message = exc.message if isinstance(exc, ConfigError) else "min_count: not an integer"
            raise fail(message) from None
        ncls = raw.get("num_classes")
        if ncls is not None and (
            isinstance(ncls, bool) or not isinstance(ncls, int) or not 2 <= ncls <= 1_000_000
        ):
            raise fail("num_classes must be an integer from 2 to 1000000")
        cols = [str(c) for c in cats] + [str(c) for c in numeric] + [str(c) for c in multi]
        dup = {c for c in cols if cols.count(c) > 1} | ({raw["label"]} & set(cols))
        if dup:
            raise fail(f"column(s) listed twice: {', '.join(sorted(_shown(c) for c in dup))}")
        if not cols:
            raise fail("no feature columns (categorical, numeric or multivalue)")
        delimiter = str(raw.get("delimiter", ","))
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise fail("delimiter must be one character (not a quote or a line end)")
        time = raw.get("time")
        if time is not None and (not _is_name(time) or str(time) == raw["label"]):
            raise fail("'time' must name one column (not the label)")
        return cls(
            label=raw["label"],
            task=task,
            categorical=tuple(str(c) for c in cats),
            numeric=tuple((str(k), str(v)) for k, v in numeric.items()),
            multivalue=tuple((str(k), str(v)) for k, v in multi.items()),
            min_count=min_count,
            num_classes=ncls,
            delimiter=delimiter,
            time=None if time is None else str(time),
        )

    @classmethod
    def load(cls, path: Path) -> CsvSchema:
        try:
            check_file(path)
        except DataError as exc:
            raise SchemaError(f"schema file: {exc.message}", path=path) from None
        try:
            text = path.read_text(encoding="utf-8")
            raw = yamlfile.load(text, what="schema file", invalid=_INVALID)
            if raw is _INVALID:
                yaml.safe_load(text)  # raises the YAMLError that says where
        except OSError as exc:
            raise SchemaError(f"cannot read ({one_line(exc.strerror or exc)})", path=path) from None
        except UnicodeDecodeError as exc:
            raise SchemaError(f"not UTF-8 text ({exc.reason})", path=path) from None
        except yaml.YAMLError as exc:
            raise SchemaError(f"invalid YAML ({_yaml_problem(exc)})", path=path) from None
        except ConfigError as exc:  # nested too deeply, or an alias bomb
            raise SchemaError(exc.message, path=path) from None
        return cls.from_dict(raw, path)


def _is_name(value: Any) -> bool:
    """A column name in a schema: a string or a number (as YAML reads ``1``), not a structure."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A schema value in a message: a short escaped quotation."""
    return printable(value) if isinstance(value, str) else excerpt(repr(value), 40)


_INVALID = object()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error in one line: what and where (YAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return one_line(f"{problem}{where}")


class CsvFormat(RawFormat):
    """A header CSV (or a Parquet file) described by a :class:`CsvSchema`."""

    name = "csv"
    accepts_parquet = True

    def __init__(
        self,
        schema: CsvSchema,
        min_count: int | dict[str, int] | None = None,
        task: str | None = None,
    ):
        super().__init__(
            task or schema.task, min_count if min_count is not None else schema.min_count
        )
        self.schema = replace(schema, task=self.task)
        self.label = schema.label
        self.time_column = schema.time
        if self.task == "multiclass":
            if schema.num_classes is None:
                raise SchemaError("a multiclass csv schema needs num_classes")
            self.num_classes = schema.num_classes
        self.schema_path: Path | None = None

    def layout(self, path: Path) -> Layout:
        return Layout(self.schema.delimiter, header=True)

    def bind(self, path: Path, names: list[str], *, need_label: bool) -> list[str]:
        s = self.schema
        want = [*s.categorical, *(c for c, _ in s.numeric), *(c for c, _ in s.multivalue)]
        _missing_columns([*([s.label] if need_label else []), *want], names, path, SchemaError)
        mc = self.field_min_count
        self.fields = (
            [FieldDef(c, "categorical", min_count=mc(c)) for c in s.categorical]
            + [
                FieldDef(c, "dense", "numeric", "none")
                if rule == "none"
                else FieldDef(c, "categorical", "numeric", rule, min_count=mc(c))
                for c, rule in s.numeric
            ]
            + [FieldDef(c, "multivalue", separator=sep, min_count=mc(c)) for c, sep in s.multivalue]
        )
        return [*([s.label] if s.label in names else []), *want]

    def parameters(self) -> dict[str, Any]:
        return {"schema": self.schema.as_dict()}

    def convert(self, batch: pa.RecordBatch, data: ChunkData) -> None:
        for f in self.fields:
            col = batch.column(f.name)
            if f.kind == "multivalue":
                text = to_text(col, f.name, data.problems)
                data.bags[f.name] = pc.split_pattern(text, f.separator or "|")
            elif f.source == "numeric":
                v, nulls = to_float(col, f.name, data.problems)
                if f.kind == "dense":  # standardised: squares must stay finite
                    huge = np.abs(np.nan_to_num(v)) > DENSE_LIMIT
                    data.problems.append(Problem(_DENSE_TOO_LARGE, f.name, huge))
                    v = np.where(huge, np.nan, v)
                if f.from_numbers:
                    data.numbers[f.name] = v
                else:
                    data.tokens[f.name] = int_tokens(bucket(v, f.bucketing or "ln2"), nulls)
            else:
                data.tokens[f.name] = categorical_tokens(col, f.name, data.problems)


class FrappeFormat(CsvFormat):
    """Frappe (BARS Frappe_x1): header CSV, label ``label``, every other column categorical."""

    name = "frappe"
    default_min_count = 2

    def __init__(self, task: str = "binary", min_count: int | dict[str, int] | None = None):
        if task != "binary":
            raise ConfigError("frappe is a binary task", column="--task")
        super().__init__(CsvSchema(label="label", categorical=("_",), min_count=2), min_count)
        self._bound = False

    def bind(self, path: Path, names: list[str], *, need_label: bool) -> list[str]:
        if not self._bound:
            cats = tuple(n for n in names if n != "label")
            self.schema = replace(self.schema, categorical=cats)
            self._bound = True
        return super().bind(path, names, need_label=need_label)

    def parameters(self) -> dict[str, Any]:
        return {"columns": list(self.schema.categorical)}


FORMATS = ("criteo", "avazu", "movielens", "frappe", "csv")


def make_format(
    name: str,
    *,
    task: str | None = None,
    schema: Path | CsvSchema | None = None,
    min_count: int | dict[str, int] | None = None,
) -> RawFormat:
    """The format object for ``--format name``."""
    if name not in FORMATS:
        raise ConfigError(
            f"unknown format {name!r} (one of {', '.join(FORMATS)})", column="--format"
        )
    if schema is not None and name != "csv":
        raise ConfigError("--schema is only for --format csv", column="--schema")
    if name == "csv":
        if schema is None:
            raise ConfigError("--format csv needs --schema FILE", column="--schema")
        parsed = schema if isinstance(schema, CsvSchema) else CsvSchema.load(Path(schema))
        fmt = CsvFormat(parsed, min_count, task)
        if not isinstance(schema, CsvSchema):
            fmt.schema_path = Path(schema)
        return fmt
    t = task or "binary"
    if name == "criteo":
        return CriteoFormat(t, min_count)
    if name == "avazu":
        if t != "binary":
            raise ConfigError("avazu is a binary task", column="--task")
        return AvazuFormat(t, min_count)
    if name == "movielens":
        return MovieLensFormat(t, min_count)
    return FrappeFormat(t, min_count)
