"""Train one FuxiCTR model on CSV splits and print one JSON line of figures.

Runs inside the anchors' virtual environment (``benchmarks/anchors/common.py: anchors_python`` builds it), never in
ours: FuxiCTR 2.3 needs ``polars<2``. FuxiCTR's pip package ships the layers and the training
loop (``BaseModel.fit``) but not its model zoo, so the three models are assembled here from its
public layers the way its model zoo does (embedding -> FM/inner products/cross net -> MLP_Block),
with FuxiCTR's own initialisation (``reset_parameters``), optimiser, gradient clipping,
learning-rate decay on plateau, early stopping and best-epoch restore.

    python fuxictr_run.py --data DIR --kind criteo|frappe --model deepfm --seed 1 --epochs 3 \
        --work WORKDIR

DIR holds train.csv, valid.csv, test.csv with a header (label first). The feature processing
(vocabularies, parquet files) is built once per WORKDIR/<dataset id> and reused; its seconds are
reported as ``prepare_s`` only by the run that built it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch
from fuxictr.datasets.criteo import CustomizedFeatureProcessor
from fuxictr.features import FeatureMap
from fuxictr.preprocess import build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import (
    CrossNetV2,
    FactorizationMachine,
    FeatureEmbedding,
    InnerProductInteraction,
    MLP_Block,
)
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from peak import peak_rss_mb  # type: ignore[import-not-found]

FRAPPE_FIELDS = [
    "user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
    "country", "city",
]  # fmt: skip


def feature_columns(kind: str) -> list[dict]:
    """The BARS feature configuration of each dataset kind."""
    if kind == "frappe":
        return [{"name": FRAPPE_FIELDS, "active": True, "dtype": "str", "type": "categorical"}]
    ints = [f"I{i}" for i in range(1, 14)]
    cats = [f"C{i}" for i in range(1, 27)]
    return [
        {
            "name": ints,
            "active": True,
            "dtype": "float",
            "type": "categorical",
            "preprocess": "convert_to_bucket",
            "na_value": 0,
        },
        {"name": cats, "active": True, "dtype": "str", "type": "categorical", "na_value": ""},
    ]


class DeepFM(BaseModel):
    """LR + FM (FuxiCTR's FactorizationMachine has both) + MLP over the flat embeddings."""

    def __init__(self, feature_map, hp: dict, **kwargs):
        super().__init__(feature_map, model_id="DeepFM", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, hp["embedding_dim"])
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(
            input_dim=feature_map.sum_emb_out_dim(),
            output_dim=1,
            hidden_units=hp["hidden_units"],
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=hp["net_dropout"],
            batch_norm=hp["batch_norm"],
        )
        self._finish(kwargs, hp)

    def _finish(self, kwargs: dict, hp: dict) -> None:
        self.compile(kwargs["optimizer"], kwargs["loss"], hp["learning_rate"])
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        y = self.fm(X, emb) + self.mlp(emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y)}


class IPNN(DeepFM):
    """MLP over [flat embeddings, pairwise inner products]."""

    def __init__(self, feature_map, hp: dict, **kwargs):
        BaseModel.__init__(self, feature_map, model_id="IPNN", **kwargs)
        f, d = feature_map.num_fields, hp["embedding_dim"]
        self.embedding_layer = FeatureEmbedding(feature_map, d)
        self.inner = InnerProductInteraction(f, output="inner_product")
        self.dnn = MLP_Block(
            input_dim=f * (f - 1) // 2 + f * d,
            output_dim=1,
            hidden_units=hp["hidden_units"],
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=hp["net_dropout"],
            batch_norm=hp["batch_norm"],
        )
        self._finish(kwargs, hp)

    def forward(self, inputs):
        emb = self.embedding_layer(self.get_inputs(inputs))
        y = self.dnn(torch.cat([emb.flatten(start_dim=1), self.inner(emb)], dim=1))
        return {"y_pred": self.output_activation(y)}


class DCNv2(DeepFM):
    """Parallel structure: [CrossNetV2(x0), MLP(x0)] -> linear."""

    def __init__(self, feature_map, hp: dict, **kwargs):
        BaseModel.__init__(self, feature_map, model_id="DCNv2", **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, hp["embedding_dim"])
        width = feature_map.sum_emb_out_dim()
        self.crossnet = CrossNetV2(width, hp["num_cross_layers"])
        self.dnn = MLP_Block(
            input_dim=width,
            output_dim=None,
            hidden_units=hp["hidden_units"],
            hidden_activations="ReLU",
            output_activation=None,
            dropout_rates=hp["net_dropout"],
            batch_norm=hp["batch_norm"],
        )
        self.fc = torch.nn.Linear(width + hp["hidden_units"][-1], 1)
        self._finish(kwargs, hp)

    def forward(self, inputs):
        x0 = self.embedding_layer(self.get_inputs(inputs), flatten_emb=True)
        y = self.fc(torch.cat([self.crossnet(x0), self.dnn(x0)], dim=-1))
        return {"y_pred": self.output_activation(y)}


MODELS = {"deepfm": DeepFM, "ipnn": IPNN, "dcnv2": DCNv2}


def build_features(args: argparse.Namespace, dataset_id: str) -> tuple[dict, float]:
    """Feature processing once per dataset id; returns the split paths and its seconds."""
    processor = CustomizedFeatureProcessor(
        feature_cols=feature_columns(args.kind),
        label_col={"name": "label", "dtype": "float"},
        dataset_id=dataset_id,
        data_root=args.work,
    )
    built = os.path.exists(os.path.join(args.work, dataset_id, "feature_map.json"))
    t0 = time.perf_counter()
    train, valid, test = build_dataset(
        processor,
        train_data=os.path.join(args.data, "train.csv"),
        valid_data=os.path.join(args.data, "valid.csv"),
        test_data=os.path.join(args.data, "test.csv"),
        min_categr_count=args.min_count,
        data_format="csv",
    )
    seconds = 0.0 if built else time.perf_counter() - t0
    return {"train_data": train, "valid_data": valid, "test_data": test}, seconds


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--kind", choices=["criteo", "frappe"], required=True)
    p.add_argument("--model", choices=sorted(MODELS), default="deepfm")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--min-count", type=int, default=1)
    p.add_argument("--work", required=True)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset_id = f"{args.kind}_{os.path.basename(os.path.normpath(args.data))}_mc{args.min_count}"
    paths, prepare_s = build_features(args, dataset_id)
    seed_everything(seed=args.seed)
    feature_map = FeatureMap(dataset_id, os.path.join(args.work, dataset_id))
    hp = {
        "embedding_dim": 16,
        "hidden_units": [128, 128],
        "net_dropout": 0.2,
        "batch_norm": True,
        "learning_rate": 1e-3,
        "num_cross_layers": 3,
    }
    feature_map.load(os.path.join(args.work, dataset_id, "feature_map.json"), hp)
    ckpt_dir = os.path.join(args.work, "checkpoints", f"{args.model}_{args.seed}_{os.getpid()}")
    os.makedirs(os.path.join(ckpt_dir, dataset_id), exist_ok=True)
    model = MODELS[args.model](
        feature_map,
        hp,
        gpu=-1,
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["logloss", "AUC"],
        monitor="AUC",
        monitor_mode="max",
        early_stop_patience=2,
        model_root=ckpt_dir,
        verbose=0,
        embedding_regularizer=0,
        net_regularizer=0,
    )
    loader = {"batch_size": args.batch_size, "data_format": "parquet", "num_workers": 0}
    train_gen, valid_gen = RankDataLoader(
        feature_map, stage="train", shuffle=True, **paths, **loader
    )
    t0 = time.perf_counter()
    model.fit(train_gen, validation_data=valid_gen, epochs=args.epochs)
    train_s = time.perf_counter() - t0
    epochs_run = model._epoch_index + 1
    valid = model.evaluate(valid_gen)
    test_gen = RankDataLoader(feature_map, stage="test", **paths, **loader)
    t1 = time.perf_counter()
    test = model.evaluate(test_gen)
    eval_s = time.perf_counter() - t1
    rows = train_gen.num_samples
    print(
        json.dumps(
            {
                "library": "fuxictr",
                "model": args.model,
                "seed": args.seed,
                "prepare_s": round(prepare_s, 2),
                "train_s": round(train_s, 2),
                "epochs_run": epochs_run,
                "train_rows_per_s": round(rows * epochs_run / train_s),
                "test_eval_rows_per_s": round(test_gen.num_samples / eval_s),
                "valid_auc": float(valid["AUC"]),
                "test_auc": float(test["AUC"]),
                "test_logloss": float(test["logloss"]),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
