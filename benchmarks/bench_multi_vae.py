"""Where MultiVAE's training time goes: ``python benchmarks/bench_multi_vae.py --epochs 40``.

Trains multi_vae_v2 on MovieLens-100K for a fixed number of epochs (no early stop) four
ways, in one process, and prints one JSON line:

- ``plain_train_s``: a bare PyTorch loop over the same batches, training steps only;
- ``plain_train_val_s``: the same loop plus full-ranking validation every epoch;
- ``lightning_bare_s``: the product's LightningModule and DataModule under a Trainer with
  no logger and no checkpointing;
- ``lightning_full_s``: the product path (TensorBoard logger, best/last checkpoints).

``lightning_full_over_plain`` is the ratio of the product to the plain loop (same work).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from common import ROOT, shipped_config
from lightrec.data.batches import dense_rows
from lightrec.data.recsys_data import RecSysDataModule
from lightrec.metrics import MetricAccumulator, exclude_seen
from lightrec.models.multi_vae import MultiVAE, kl_weight
from lightrec.training.fit import build_datamodule, build_model


def make(batch_size: int) -> tuple[RecSysDataModule, MultiVAE]:
    cfg = shipped_config(
        "multi_vae_v2",
        [f"data.data_dir={ROOT / 'data'}", f"data.batch_size={batch_size}", "data.split_seed=0"],
    )
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    model = build_model(cfg, dm.num_items)
    assert isinstance(model, MultiVAE)
    return dm, model


def plain(epochs: int, batch_size: int, validate: bool) -> float:
    torch.manual_seed(0)
    dm, model = make(batch_size)
    opt = model.configure_optimizers()
    train_dl, val_dl = dm.train_dataloader(), dm.val_dataloader()
    step = 0
    t = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for b in train_dl:
            x = dense_rows(b["input_indptr"], b["input_indices"], dm.num_items)
            logits, mu, logvar = model(x)
            recon, kl = model.loss_parts(logits, x, mu, logvar)
            loss = recon + kl_weight(step, 0.2, 20000) * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if validate:
            model.eval()
            acc = MetricAccumulator([10, 20])
            with torch.no_grad():
                for b in val_dl:
                    scores, seen = model.score_batch(b)
                    tgt = dense_rows(b["target_indptr"], b["target_indices"], dm.num_items)
                    acc.update(exclude_seen(scores, seen), tgt)
            acc.compute()
    return time.perf_counter() - t


def lightning(epochs: int, batch_size: int, full: bool) -> float:
    pl.seed_everything(0, verbose=False)
    dm, model = make(batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        extra = (
            dict(
                logger=TensorBoardLogger(tmp, name="tb", version=""),
                callbacks=[ModelCheckpoint(tmp, monitor="val/ndcg@10", mode="max", save_last=True)],
            )
            if full
            else dict(logger=False, enable_checkpointing=False)
        )
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            devices=1,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=10,
            **extra,
        )
        t = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=512)
    a = ap.parse_args()
    out = {"epochs": a.epochs, "batch_size": a.batch_size, "threads": torch.get_num_threads()}
    out["plain_train_s"] = round(plain(a.epochs, a.batch_size, validate=False), 2)
    out["plain_train_val_s"] = round(plain(a.epochs, a.batch_size, validate=True), 2)
    out["lightning_bare_s"] = round(lightning(a.epochs, a.batch_size, full=False), 2)
    out["lightning_full_s"] = round(lightning(a.epochs, a.batch_size, full=True), 2)
    out["lightning_full_over_plain"] = round(out["lightning_full_s"] / out["plain_train_val_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
