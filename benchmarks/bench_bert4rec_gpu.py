"""BERT4Rec epoch time through the full Lightning stack, on an ML-20M-shaped synthetic log.

``python benchmarks/bench_bert4rec_gpu.py [--scale 1.0] [--epochs 4]``

The log is drawn like shared/bench's reference loop (138,493 users, 26,744 items with
Zipf(0.9) popularity, lognormal sequence lengths of mean 144 clipped to [5, 200]). It goes
through the product's RecSysDataModule (sequence view, batches of 256) and BERT4Rec
LightningModule (64 hidden, 2 layers, 2 heads, dropout 0.1, mask rate 0.2) under a
``pytorch_lightning.Trainer``; only validation is off, as in the reference. Prints one
JSON line: the median epoch time after a warm-up epoch, per precision.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import pytorch_lightning as pl
import torch

from common import shipped_config
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.train import build_datamodule, build_model

# the reference loop's model: bert4rec_v2's architecture with BERT's dropout everywhere
REFERENCE_MODEL = [
    "model.dropout=0.1",
    "model.attn_dropout=null",
    "model.last_item_prob=0.0",
    "model.weight_decay=0.0",
]


def bench_config(batch_size: int, max_len: int):
    return shipped_config(
        "bert4rec_v2",
        [
            "data.split_strategy=none",
            f"data.batch_size={batch_size}",
            f"data.max_len={max_len}",
            "data.min_interactions=1",
            "data_cache.use_cache=false",
            *REFERENCE_MODEL,
        ],
    )


def synthetic_datamodule(scale: float, batch_size: int, seed: int = 1) -> RecSysDataModule:
    n_users, n_items, max_len = int(138_493 * scale), int(26_744 * max(scale, 0.05)), 200
    rng = np.random.default_rng(seed)
    raw = np.exp(0.9 * rng.standard_normal(n_users))
    lengths = np.clip(np.round(raw / raw.mean() * 144), 5, max_len).astype(np.int64)
    p = 1.0 / np.arange(1, n_items + 1) ** 0.9
    item = rng.choice(n_items, size=int(lengths.sum()), p=p / p.sum()).astype(np.int32)
    user = np.repeat(np.arange(n_users, dtype=np.int32), lengths)
    dm = build_datamodule(bench_config(batch_size, max_len))
    # the arrays the data module would have prepared from a CSV of this log
    dm.arrays = {
        "user": user,
        "item": item,
        "time": np.arange(len(user)),
        "split": np.zeros(len(user), dtype=np.int8),
    }
    dm.meta = {"user_ids": list(range(n_users)), "item_ids": list(range(n_items)), "stats": {}}
    return dm


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sync()
        self.t = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        sync()
        self.times.append(time.perf_counter() - self.t)


def epoch_time(dm: RecSysDataModule, precision: str, epochs: int) -> list[float]:
    pl.seed_everything(0, verbose=False)
    model = build_model(bench_config(dm.batch_size, dm.max_len), dm.num_items)
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(model, datamodule=dm)
    return timer.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precision", nargs="+", default=["32-true", "bf16-mixed"])
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True  # as the reference loop
    torch.backends.cudnn.allow_tf32 = True
    t = time.perf_counter()
    dm = synthetic_datamodule(a.scale, a.batch_size)
    dm.setup("fit")
    gpu = torch.cuda.is_available()
    out = {
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "torch": torch.__version__,
        "shape": [dm.num_users, dm.num_items, 200, int(len(dm.arrays["user"]))],
        "setup_s": round(time.perf_counter() - t, 2),
    }
    for precision in a.precision:
        times = epoch_time(dm, precision, a.epochs)
        out[f"epoch_s_{precision}"] = round(statistics.median(times[1:]), 3)
        out[f"epochs_s_{precision}_all"] = [round(x, 3) for x in times]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
