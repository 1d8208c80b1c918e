"""Train one pytorch-fm (``torchfm``) model on CSV splits and print one JSON line of figures, the
same fields as ``fuxictr_run.py``.

Runs inside the anchors' virtual environment (``common.anchors_python`` builds it). Training is
pytorch-fm's own (its ``examples/main.py``): a ``Dataset`` of integer-encoded fields read through
a ``DataLoader``, ``torch.optim.Adam``, ``BCELoss`` on the model's sigmoid output, validation AUC
after every epoch and its ``EarlyStopper`` (``num_trials=2``, the best model saved). Where this
runner departs from that script, for the shared configuration: weight decay 0 (the script's
default is 1e-6), the training rows are reshuffled every epoch (the script shuffles once, by
``random_split``), no loader worker processes (the script uses 8; FuxiCTR's runs use 0), and the
best epoch's weights are loaded back before the test split is scored (the script saves them but
scores the test split with the last epoch's).

pytorch-fm's ``CriteoDataset`` reads Criteo's raw text into lmdb; here the CSV splits are
encoded with pandas the same way: per field, the training split's values seen at least
``--min-count`` times get ids and everything else (rare, or unseen in valid/test) one
out-of-vocabulary id; Criteo's I1..I13 are bucketed first (v > 2: int(ln(v)^2), else v;
missing: a token of its own). Its seconds are ``prepare_s``.

    python torchfm_run.py --data DIR --kind criteo|frappe --model deepfm --seed 1 --epochs 3 \
        [--work WORKDIR]

DIR holds train.csv, valid.csv, test.csv with a header (label first).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from peak import peak_rss_mb  # type: ignore[import-not-found]
from sklearn.metrics import log_loss, roc_auc_score
from torch.utils.data import DataLoader, Dataset
from torchfm.model.dfm import DeepFactorizationMachineModel

SPLITS = ("train", "valid", "test")
MISSING = np.iinfo(np.int64).min  # a numeric field's missing value, one token of its own


class EncodedDataset(Dataset):
    """Rows of field ids and their labels, item by item as pytorch-fm's datasets serve them."""

    def __init__(self, fields: np.ndarray, labels: np.ndarray):
        self.items = fields
        self.targets = labels

    def __len__(self) -> int:
        return self.targets.shape[0]

    def __getitem__(self, index):
        return self.items[index], self.targets[index]


def bucket(values: pd.Series) -> np.ndarray:
    """pytorch-fm's ``convert_numeric_feature``: v > 2 -> int(ln(v)^2), else v; NaN -> MISSING."""
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    big = v > 2
    out = np.where(big, np.floor(np.log(np.where(big, v, 1.0)) ** 2), v)
    missing = np.isnan(out)
    out = np.where(missing, 0, out).astype(np.int64)
    out[missing] = MISSING
    return out


def tokens(frame: pd.DataFrame, column: str, kind: str) -> pd.Series:
    if kind == "criteo" and column.startswith("I"):
        return pd.Series(bucket(frame[column]))
    return frame[column].fillna("")


def encode(data: str, kind: str, min_count: int) -> tuple[dict, list[int]]:
    """The three splits as (int64 field ids, float32 labels), and each field's size."""
    frames = {}
    for split in SPLITS:
        path = os.path.join(data, f"{split}.csv")
        header = pd.read_csv(path, nrows=0).columns
        numeric = {c for c in header[1:] if kind == "criteo" and c.startswith("I")}
        dtypes = {c: np.float64 if c in numeric else str for c in header[1:]}
        dtypes[header[0]] = np.float32
        frames[split] = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    columns = list(frames["train"].columns)
    label, fields = columns[0], columns[1:]
    encoded = {s: np.empty((len(f), len(fields)), dtype=np.int64) for s, f in frames.items()}
    field_dims = []
    for j, column in enumerate(fields):
        train_tokens = tokens(frames["train"], column, kind)
        counts = train_tokens.value_counts(sort=False)
        vocab = pd.Index(counts.index[counts.to_numpy() >= min_count])
        oov = len(vocab)  # pytorch-fm: field size len(vocab) + 1, the last id for the rest
        field_dims.append(oov + 1)
        for split, frame in frames.items():
            raw = train_tokens if split == "train" else tokens(frame, column, kind)
            ids = vocab.get_indexer(raw)
            encoded[split][:, j] = np.where(ids < 0, oov, ids)
    out = {split: (encoded[split], frames[split][label].to_numpy()) for split in SPLITS}
    return out, field_dims


class EarlyStopper:
    """pytorch-fm's: keep going while validation AUC improves or ``num_trials`` has not passed."""

    def __init__(self, num_trials: int, save_path: str):
        self.num_trials = num_trials
        self.trial_counter = 0
        self.best_accuracy = 0.0
        self.save_path = save_path

    def is_continuable(self, model: torch.nn.Module, accuracy: float) -> bool:
        if accuracy > self.best_accuracy:
            self.best_accuracy = accuracy
            self.trial_counter = 0
            torch.save(model.state_dict(), self.save_path)
            return True
        if self.trial_counter + 1 < self.num_trials:
            self.trial_counter += 1
            return True
        return False


def train(model, optimizer, data_loader, criterion) -> None:
    model.train()
    for fields, target in data_loader:
        y = model(fields)
        loss = criterion(y, target.float())
        model.zero_grad()
        loss.backward()
        optimizer.step()


def test(model, data_loader) -> tuple[list[float], list[float]]:
    model.eval()
    targets, predicts = [], []
    with torch.no_grad():
        for fields, target in data_loader:
            y = model(fields)
            targets.extend(target.tolist())
            predicts.extend(y.tolist())
    return targets, predicts


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--kind", choices=["criteo", "frappe"], required=True)
    p.add_argument("--model", choices=["deepfm"], default="deepfm")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--work", help="where the best model is saved (default: a temporary dir)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    splits, field_dims = encode(args.data, args.kind, args.min_count)
    prepare_s = time.perf_counter() - t0

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    datasets = {split: EncodedDataset(*splits[split]) for split in SPLITS}
    train_loader = DataLoader(datasets["train"], batch_size=args.batch_size, shuffle=True)
    valid_loader = DataLoader(datasets["valid"], batch_size=args.batch_size)
    test_loader = DataLoader(datasets["test"], batch_size=args.batch_size)
    model = DeepFactorizationMachineModel(
        np.array(field_dims), embed_dim=16, mlp_dims=(128, 128), dropout=0.2
    )
    criterion = torch.nn.BCELoss()
    optimizer = torch.optim.Adam(params=model.parameters(), lr=1e-3, weight_decay=0)
    if args.work:
        os.makedirs(args.work, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work) as save_dir:
        early_stopper = EarlyStopper(num_trials=2, save_path=os.path.join(save_dir, "dfm.pt"))
        t1 = time.perf_counter()
        epochs_run = 0
        for _ in range(args.epochs):
            train(model, optimizer, train_loader, criterion)
            epochs_run += 1
            auc = roc_auc_score(*test(model, valid_loader))
            if not early_stopper.is_continuable(model, auc):
                break
        model.load_state_dict(torch.load(early_stopper.save_path))
        train_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    targets, predicts = test(model, test_loader)
    eval_s = time.perf_counter() - t2
    print(
        json.dumps(
            {
                "library": "pytorch-fm",
                "model": args.model,
                "seed": args.seed,
                "prepare_s": round(prepare_s, 2),
                "train_s": round(train_s, 2),
                "epochs_run": epochs_run,
                "train_rows_per_s": round(len(datasets["train"]) * epochs_run / train_s),
                "test_eval_rows_per_s": round(len(datasets["test"]) / eval_s),
                "valid_auc": float(early_stopper.best_accuracy),
                "test_auc": float(roc_auc_score(targets, predicts)),
                "test_logloss": float(log_loss(targets, predicts, labels=[0, 1])),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
