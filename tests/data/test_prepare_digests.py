"""Regression: ``prepare`` writes the same bytes as before the split of ``prepare.py``.

Small Criteo, MovieLens (with movies: bags and a side table) and csv-schema (dense, quantile,
ln2/log2 and multi-valued fields) inputs, prepared in several chunks; every output file is
compared by sha256 with digests recorded from the code before the refactor. meta.json is hashed
without what depends on the time, the machine or the version (``created``, ``seconds``,
``autoloss_version``, absolute input paths); Parquet side tables by their content (schema and
rows), not their bytes, which name the writing pyarrow version.

To re-record after an intended change of the output: ``python tests/data/test_prepare_digests.py``
prints the digests of the current code.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from autoloss.data.prepare import PrepareResult, prepare

if __package__:
    from .conftest import MOVIES_CSV, SCHEMA_YAML, criteo_text, csv_text, ratings_text, write_raw
else:  # run as a script to re-record the digests
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import (  # type: ignore[no-redef]
        MOVIES_CSV,
        SCHEMA_YAML,
        criteo_text,
        csv_text,
        ratings_text,
        write_raw,
    )


def _criteo(d: Path) -> PrepareResult:
    path = write_raw(d / "in" / "train.txt", criteo_text(600, seed=11))
    return prepare("criteo", path, d / "out", min_count=2, chunk_rows=128, split="7:2:1", seed=3)


def _movielens(d: Path) -> PrepareResult:
    ratings = write_raw(d / "in" / "ratings.csv", ratings_text(500, seed=12))
    write_raw(d / "in" / "movies.csv", MOVIES_CSV)
    return prepare("movielens", ratings, d / "out", task="multiclass", chunk_rows=90)


def _csv(d: Path) -> PrepareResult:
    data = write_raw(d / "in" / "data.csv", csv_text(500, seed=13))
    schema = write_raw(d / "in" / "schema.yaml", SCHEMA_YAML)
    return prepare("csv", data, d / "out", schema=schema, chunk_rows=70)


CASES: dict[str, Callable[[Path], PrepareResult]] = {
    "criteo": _criteo,
    "movielens": _movielens,
    "csv": _csv,
}

# Recorded from the code before the refactor (commit 041890c).
EXPECTED: dict[str, dict[str, str]] = {
    "criteo": {
        "meta.json": "2b31a668a41e913cd9873cf96f6d496f40b9452464f7c11e7f3538e8e5b2d321",
        "test/x.npy": "2ad03b7440137aabe636bff71a6f2228f9a04aead3d4cbedf06b47fc7484dbd8",
        "test/y.npy": "4465f4794efede274fede396a272c0596f92a58f1706eb8f69de27b4f7f2a770",
        "train/x.npy": "58ca82f13bcec1274e71c065887a90c5cfaf066834d4df1f6b0da487fd8791b1",
        "train/y.npy": "6429d676736aba526d187b699a6c50eb8a803af7b793a21b6001e8e50ce229a1",
        "valid/x.npy": "9b7a908327d28c96cac79cc5e77b7c4d3e8b9745d12fbad180401c0e61579de0",
        "valid/y.npy": "48406e79c5c37f10b492908b2fb26b6f6ff5089757682c2c22668ab90c339bd7",
        "vocab/C1.json": "736f7d6000f4c2ea62c6bf2c52e37e2629f1eca39ba2fbea71e1e693fad73cdb",
        "vocab/C10.json": "37ed344e59f588ae2ece07e6ee2c6764c76fcbcb6e5702720a490e5a3b7a868f",
        "vocab/C11.json": "7333e4bc5d92446ed01fe8199a0294d1a622800ddff42f58f6ff111647d7eba8",
        "vocab/C12.json": "b212aea7ac7b2994d7a89c79ff9b873d77c01ab51255262f68888055523fe13b",
        "vocab/C13.json": "7e075b9904cad45a0e1bfb28059ac91c76008d7cfe70c547e489aaaa9d240ae2",
        "vocab/C14.json": "62c8d43bdf3d96731dfb123ed29223950b507751d8f8ab85e4d82aee93f76ebc",
        "vocab/C15.json": "81c0ced25efb8c05534fe205818a553e277117e0c3ae9a7fe2f0311c1e877d56",
        "vocab/C16.json": "efb1a006cc859bd9d59805366585e7e7c774995fc9a8b57bafd52ab2d44c5671",
        "vocab/C17.json": "4cf8c8c65f450eb1e640525975feceea606ba61d1cb3a7e8e31e25bdca65820a",
        "vocab/C18.json": "a96cfb09db9deac0fa3c157ca2d15162a3ef2f6e3083f9dbf216eff68226f56e",
        "vocab/C19.json": "2bde4f844a187ef2826e6e4bb51ff6789004268e5609a6ec7c7bfb3f088c09eb",
        "vocab/C2.json": "4562057b15051ca52024e662bc3cd41c278b7597721f2f5ca85e26ca9ed9c877",
        "vocab/C20.json": "b16818b0e78891cb0babc70d86d80c004d48747f7362443b6de5e148efd4ff86",
        "vocab/C21.json": "5449e8bea3f7bd6c66295ecb6abc85c8b9c33de41596dd8714d516ce22250050",
        "vocab/C22.json": "0820cf3e67d0af059bc13d56144199d57d239b5d9c9b8d8901134013974de645",
        "vocab/C23.json": "8b131c3f6021d2129676e456b476230bbc544d888ad374412792984a3d405e60",
        "vocab/C24.json": "06cc78befd4b082b74712f6d5e0a8c625857e046ed9b7e85f71a6ebceffde55c",
        "vocab/C25.json": "752f2b2713903383f5ab6a51bda83ce887e44dae3a4d7625eb74c444bc2d405d",
        "vocab/C26.json": "16e8c21a77eb2c5bd94ce384d0ce1f343cf522127173a96c31031d6a176807bf",
        "vocab/C3.json": "bcf1780066cdcdd3e1bdf4fd703cdeb853d897307aa195ba1f698819680155e4",
        "vocab/C4.json": "a9e6008a123736bebaf5a44fd58bd94451ecbde4a4b544326d22afe66c639347",
        "vocab/C5.json": "2c076132cab66297ddce027d605697d51799648e4fffe0c9c56b86d6e216e6bf",
        "vocab/C6.json": "05663fb1bf4ed8b225a8c4b1b55fccfa81c5ccec0c4f53bad82589a973b4503d",
        "vocab/C7.json": "0d20a67ff6952cbad4c4c2966eaa36b7d73694cf536463da1acf539f83cbd4c4",
        "vocab/C8.json": "51ef454e33e1f918c836012b2ea999a3abe19e4ca26c407a2b7a84e5882357f9",
        "vocab/C9.json": "5e526434964be916609de5b7771f7b1fe49681aa482ffccac298efb40c433ecc",
        "vocab/I1.json": "91b51e7db50c03a07c95364f84d5b76518644d58cd57035952d6b4bae8c71578",
        "vocab/I10.json": "d2262c904cb140ac53c51f5684f436964a9d684bd2c155cc3fbbb136c489d987",
        "vocab/I11.json": "5de8752f11efebf99cc2c5f50a96c92612dcd7e38becf407b5b414814d71223b",
        "vocab/I12.json": "c0100fcf3897726ea3493f2abd5a12e3fcae0d4dac564bec5296c1cddebae873",
        "vocab/I13.json": "ba5a1eb99e07bb15772252e1eca3bb70fd3249f93d5b86edfb9c73a92647af4f",
        "vocab/I2.json": "5f6661e921900a69a34037e4d558a58ba9e164a7a3de363cfe92f0f811e59c63",
        "vocab/I3.json": "b4f04d0415059fc99c692f65b8c382160c5bd30b91a4c2608899c631cad28890",
        "vocab/I4.json": "7a1cd94a2e16b558d17e386ae1485eb0e1f97b7610ba134a648aa2f001828993",
        "vocab/I5.json": "ed87f22fd4c471c340d9e6366b7de880a1efd76d004e2de64b8877856471668e",
        "vocab/I6.json": "1c0e9cde4205b51f96a3779c11d80dfcc434ad108ed5c18e748c7ff1d8cf0d18",
        "vocab/I7.json": "27431dc12d86c5d4adad079360a5b642de2d4f81a5e343d9358ec9d886c77709",
        "vocab/I8.json": "728e8da7b6c88bd961fcc745a804dc972eba1f7dfda4320277ceb404bd834db2",
        "vocab/I9.json": "aea7ade35ba69a9cd783b5065de370e8d11bfc0214305e0fc36dc8910521140f",
    },
    "csv": {
        "meta.json": "2915a7bd9c37d3d503edcf4b8f755c0d2db2bad02157f58ea0baf694cd4a70a0",
        "test/bags.npy": "1b4b4d657a7267f76b9b7a852d8461c98cf851ca186c8cd1902d452121fe7144",
        "test/dense.npy": "15d9e69cd71dea5cf7fecf9d1331ef10c28270bea156b4071d1b4395d2c01344",
        "test/x.npy": "e938b9e2f836a0ac2b5ed16f54f98422bc87019936d7530e054fb03f627fc95f",
        "test/y.npy": "e4df41ede468d04768a78c6eb32af4670d705df9ec9826c52f85f2184615fed4",
        "train/bags.npy": "6b25a5e2b285f4cf85a40f2a895b0ddf82aa16e528bf6541e3ed2aed9db984ed",
        "train/dense.npy": "fd13a515e274cf1c28c563da3bda2e077327d69ca5f18ff9326f4ea5a22f16d5",
        "train/x.npy": "a942015212305f9b49c7d0cfaac7a31edae9eb4cb715412232960d43c37f1ee4",
        "train/y.npy": "0936c80933cd6212710232025d7a52342cf0fe4c388e71c5b7c5e37d68827200",
        "valid/bags.npy": "0d5ca447a9051df592314c5493fb3b6031730459ce48d2bd9bd46cdb2da2d361",
        "valid/dense.npy": "bd8f4d6cbafb45e37fdedfbbfa61c6b387a38e286b38cfdfc05e708bc0cc73d1",
        "valid/x.npy": "9c6ac5002e82c9254a8e6f0517e3ee5897c9dbd5801443933ac049037bb31792",
        "valid/y.npy": "572270f927bd9281a08d3b8c8170d04993511f6a1fb04234b65c777892b05ee2",
        "vocab/count.json": "b306afe9bc0cf2f6fff1720bc36bfb307ac43e28bb9f8068b48c6d924280bec7",
        "vocab/item.json": "69ae8597a9973a13aa2a53610be427331ad1e4a33ff8d014a013fcf8b0cc971f",
        "vocab/price.json": "3753bff2f6b0accbe42f902b2af5058fb2d40b70729cd5641d547ee32dc63249",
        "vocab/tags.json": "55956b0924282cd40351395c35329d4b3578f2633cd9a024fe857812277fa2bd",
        "vocab/user.json": "3e716b582173ee14eea9153751731838303336fafc1a6353e677f0579482fda4",
        "vocab/views.json": "e8ab6c543870ade03cfd9768df20cf44b2baad8cf0f7180c0c58aaf3add22d56",
    },
    "movielens": {
        "meta.json": "4cc0c05e196cbcbb03c85da6e4ce991534a3d99f618f98ef098c8e75cf372088",
        "side/movies.parquet": "77ad2ecb8e72273e069bdcf0a950bef988ed05da2d881a1faca9c1c5f5f62d5f",
        "test/bags.npy": "cc4c62bf05f16cb03043a96856913208bae4723c4e7248b607d6beac8cea9f2a",
        "test/x.npy": "f8ce6b0bdc146e390c8ead5dbd895b30cf5276bfa3cbe037594865a1dda574f9",
        "test/y.npy": "4b50dfc5a5af08a676e6a612d28cee6d3cd568db9cb442ecd1deb524ffde558b",
        "train/bags.npy": "aadacdb32cedde118a64da5066927508d0f9352778add9bbb6f5b31542485041",
        "train/x.npy": "c30483a7c4bf40aad79e9d0b2b34ac671aa77bf3e3f43889cf2759f7e3853e7d",
        "train/y.npy": "70201c63fab9b77996afec0912f85436ea9558514d76c18208a4bffdfcbdeb13",
        "valid/bags.npy": "d5901a5621e88ba4dc1dca88e33b4b42d9ce765d7b083b584bc5f15a76042659",
        "valid/x.npy": "3d378dac838f1c0b5a8712a7e17fc8acc993afffb2885269bc6d088a5fbc8e69",
        "valid/y.npy": "1d040aa2a4201f1493efe84bf3a627f08deda5dc7d48f4c22e648a524bc8af97",
        "vocab/genres.json": "ce4c27cf766adcc4bde44f3baa4a73b1c06ef0bd3f3b4f82da1827fa66d90d9a",
        "vocab/movieId.json": "370b32a6cf485c4a56d496e4a2acd95e322c9c52a702a66b8df8728dbde2481b",
        "vocab/userId.json": "a88fc0e0611d32aa7b2c723614fe96201aa941e0b9476a93ec79b6bea041724f",
        "vocab/year.json": "ed1788a19ba1d8df7454d8a9ecbef8961bd13afb1c827622c73a99a0245b6e17",
    },
}


def _meta_digest(path: Path) -> str:
    meta = json.loads(path.read_text(encoding="utf-8"))
    for key in ("created", "seconds", "autoloss_version"):
        meta.pop(key)
    meta.pop("digests", None)  # the arrays' own digests (checked in test_prepare_output_unchanged)
    for entry in meta["inputs"]:
        entry["path"] = Path(entry["path"]).name
    if meta["protocol"].get("movies"):
        meta["protocol"]["movies"] = Path(meta["protocol"]["movies"]).name
    return hashlib.sha256(json.dumps(meta, indent=1).encode()).hexdigest()


def _parquet_digest(path: Path) -> str:
    table = pq.read_table(path)
    content = {"schema": str(table.schema), "rows": table.to_pylist()}
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def digests(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out`` (meta.json and Parquet files normalised, see above)."""
    result = {}
    for p in sorted(out.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(out).as_posix()
        if rel == "meta.json":
            result[rel] = _meta_digest(p)
        elif p.suffix == ".parquet":
            result[rel] = _parquet_digest(p)
        else:
            result[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return result


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_output_unchanged(tmp_path: Path, case: str) -> None:
    CASES[case](tmp_path)
    found = digests(tmp_path / "out")
    assert found == EXPECTED[case]
    # meta.json records the SHA-256 and size of every array, as written
    recorded = json.loads((tmp_path / "out" / "meta.json").read_text(encoding="utf-8"))["digests"]
    arrays = {k: v for k, v in found.items() if k.endswith(".npy")}
    assert {k: v["sha256"] for k, v in recorded.items()} == arrays
    for rel, entry in recorded.items():
        assert entry["size"] == (tmp_path / "out" / rel).stat().st_size


if __name__ == "__main__":
    recorded = {}
    for name in sorted(CASES):
        with tempfile.TemporaryDirectory() as tmp:
            CASES[name](Path(tmp))
            recorded[name] = digests(Path(tmp) / "out")
    print(json.dumps(recorded, indent=4))
