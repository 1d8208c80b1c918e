"""Small raw files in the exact layouts of each format, written per test."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

import numpy as np
import pytest


def write_raw(path: Path, text: str | bytes) -> Path:
    """Write ``text`` to ``path``, compressed by extension (.gz, .bz2)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    elif path.suffix == ".bz2":
        data = bz2.compress(data)
    path.write_bytes(data)
    return path


def criteo_line(label: int | str, ints: list[str], cats: list[str]) -> str:
    return "\t".join([str(label), *ints, *cats]) + "\n"


def criteo_text(n: int, seed: int = 0) -> str:
    """``n`` rows: label, 13 ints (some empty/negative), 26 hex strings (some empty)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-2, 200))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.zipf(1.5)) % 50:08x}" for _ in range(26)]
        lines.append(criteo_line(int(rng.random() < 0.3), ints, cats))
    return "".join(lines)


@pytest.fixture
def criteo_file(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "train.txt", criteo_text(300))


AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
    "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
    "C14,C15,C16,C17,C18,C19,C20,C21"
)


def avazu_text(n: int, seed: int = 0, hours: list[str] | None = None) -> str:
    rng = np.random.default_rng(seed)
    rows = [AVAZU_HEADER]
    for i in range(n):
        hour = (
            hours[i % len(hours)]
            if hours
            else f"141{int(rng.integers(21, 31)):03d}{int(rng.integers(0, 24)):02d}"
        )
        rest = [f"v{int(rng.integers(0, 6))}" for _ in range(21)]
        rows.append(",".join([f"{10**18 + i}", str(int(rng.random() < 0.2)), hour, *rest]))
    return "\n".join(rows) + "\n"


@pytest.fixture
def avazu_file(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "avazu.csv", avazu_text(200))


MOVIES_CSV = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    "2,Jumanji (1995),Adventure|Children|Fantasy\n"
    '3,"Grumpier Old Men, The (1995)",Comedy|Romance\n'
    "4,Untitled,(no genres listed)\n"
)


def ratings_text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    stars = np.arange(1, 11) / 2
    rows = ["userId,movieId,rating,timestamp"]
    for _ in range(n):
        rows.append(
            f"{int(rng.integers(1, 20))},{int(rng.integers(1, 6))},{rng.choice(stars)},964982703"
        )
    return "\n".join(rows) + "\n"


@pytest.fixture
def movielens_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ml"
    write_raw(d / "ratings.csv", ratings_text(400))
    write_raw(d / "movies.csv", MOVIES_CSV)
    return d


FRAPPE_HEADER = "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city"


def frappe_text(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    rows = [FRAPPE_HEADER]
    for _ in range(n):
        rows.append(
            f"{int(rng.random() < 0.33)},{int(rng.integers(0, 30))},{int(rng.integers(0, 40))},"
            f"{rng.choice(['morning', 'night'])},{rng.choice(['monday', 'sunday'])},workday,"
            f"unknown,free,{rng.choice(['sunny', 'cloudy'])},Spain,{int(rng.integers(0, 3))}"
        )
    return "\n".join(rows) + "\n"


@pytest.fixture
def frappe_dir(tmp_path: Path) -> Path:
    d = tmp_path / "frappe"
    for name, n, seed in (("train", 300, 1), ("valid", 80, 2), ("test", 60, 3)):
        write_raw(d / f"{name}.csv.gz", frappe_text(n, seed))
    return d


SCHEMA_YAML = """\
label: click
task: binary
categorical: [user, item]
numeric: {count: ln2, price: quantile:4, score: none, views: log2}
multivalue: {tags: "|"}
min_count: {user: 1, item: 2}
"""


def csv_text(n: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    rows = ["click,user,item,count,price,score,views,tags,ignored"]
    for _ in range(n):
        k = int(rng.integers(0, 4))
        tags = "|".join(f"t{int(t)}" for t in rng.integers(0, 6, k))
        count = "" if rng.random() < 0.1 else str(int(rng.integers(-1, 300)))
        rows.append(
            f"{int(rng.random() < 0.4)},u{int(rng.integers(0, 10))},i{int(rng.integers(0, 30))},"
            f"{count},{rng.uniform(0, 100):.2f},{rng.normal(5, 2):.3f},{int(rng.integers(0, 1000))},"
            f"{tags},x"
        )
    return "\n".join(rows) + "\n"


@pytest.fixture
def csv_files(tmp_path: Path) -> tuple[Path, Path]:
    data = write_raw(tmp_path / "data.csv", csv_text(400))
    schema = write_raw(tmp_path / "schema.yaml", SCHEMA_YAML)
    return data, schema
