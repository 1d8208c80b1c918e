"""Train one autoloss model on a prepared dataset and print one JSON line of figures, the same
fields as ``fuxictr_run.py`` (run in our environment).

    python ours_run.py --data PREPARED_DIR --model deepfm --seed 1 --epochs 3 --out RUN_DIR \
        [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from peak import peak_rss_mb  # type: ignore[import-not-found]

from autoloss.train.config import RunConfig
from autoloss.train.run import train_run
from autoloss.train.trainer import Trainer


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="deepfm")
    p.add_argument("--loss", default="ce")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    cfg = RunConfig()
    settings = {
        "data.path": args.data,
        "model.name": args.model,
        "loss.method": args.loss,
        "train.seed": args.seed,
        "train.epochs": args.epochs,
        "train.num_threads": args.threads,
        "train.progress": "off",
        "out": args.out,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = value
    for key, value in settings.items():
        cfg.set(key, value)
    t0 = time.perf_counter()
    _, result = train_run(cfg, overwrite=True, log=lambda *_: None)
    wall = time.perf_counter() - t0
    trainer = Trainer(cfg)  # test-split scoring speed of the same architecture
    t1 = time.perf_counter()
    trainer.predict_split("test")
    eval_s = time.perf_counter() - t1
    print(
        json.dumps(
            {
                "library": "autoloss",
                "model": args.model,
                "seed": args.seed,
                # the whole run, as the anchors' fit: validation after each epoch, test scoring
                # and writing the run directory included (conservative for us)
                "train_s": round(wall, 2),
                "epochs_run": result["epochs"],
                "best_epoch": result["best_epoch"],
                "train_rows_per_s": round(result["train_rows"] / wall),  # rows of all epochs
                "steps_only_rows_per_s": round(result["train_rows_per_second"]),
                "test_eval_rows_per_s": round(len(trainer.dataset.split("test")) / eval_s),
                "valid_auc": result["valid"]["auc"],
                "test_auc": result["test"]["auc"],
                "test_logloss": result["test"]["logloss"],
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
